"""Reading the deployment files as docker compose and Dagster read them: compose's variable
interpolation, ``.env`` files, command-line options, volume mounts and an instance config's
``env:`` references."""

import re
from pathlib import Path

from ml_platform_tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
DAGSTER_SERVICES = ("code", "webserver", "daemon")
MODULE = "ml_platform.definitions"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(ValueError):
    pass


def interpolate(value, env: dict[str, str]):
    """docker compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, over strings in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        unset = current is None or (current == "" and op and op.startswith(":"))
        if op and op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return current or ""

    return VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def read_env_file(path: Path, uncomment: str | None = None) -> dict[str, str]:
    """The file's variables; with ``uncomment``, also the commented ``# NAME=value`` lines of the
    block headed ``# --- <uncomment>:`` (as a user enables it)."""
    pairs = {}
    block = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("# --- "):
            block = line[len("# --- ") :].split(":")[0]
        if uncomment and block == uncomment and re.match(r"# [A-Z][A-Z0-9_]*=", line):
            line = line[2:]
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def active_services(compose: dict, *profiles: str) -> dict[str, dict]:
    """The services ``docker compose [--profile P ...] up`` starts: those without profiles, and
    those in one of ``profiles``."""
    return {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def _option(args: list[str], *names: str) -> str:
    for name in names:
        if name in args:
            return args[args.index(name) + 1]
    raise AssertionError(f"none of {names} in {args}")


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> source (a named volume, or a path relative to the repository)."""
    out = {}
    for spec in service.get("volumes", []):
        # A source chosen in .env (`${DAGSTER_INSTANCE_YAML:-...}`) is read as its default here.
        source, target, *_ = interpolate(spec, {}).split(":")
        out[target] = source
    return out


def _env_refs(node) -> set[str]:
    """Every `env:` variable a Dagster instance config refers to."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_refs(v) for v in node)) if node else set()
    return set()


def _under(path: str, mounts: dict[str, str]) -> str | None:
    """The volume mounted at a prefix of ``path``, if any."""
    hits = [t for t in mounts if path == t or path.startswith(t.rstrip("/") + "/")]
    return mounts[max(hits, key=len)] if hits else None
