"""Edits to Python source text for the code-version tests: neutral ones (comments, docstrings,
formatting) and ones that change what the code computes (constants, operators, called names)."""

import ast
import io
import itertools
import tokenize

FSTRING_START = getattr(tokenize, "FSTRING_START", None)
FSTRING_END = getattr(tokenize, "FSTRING_END", None)


class Source:
    """A module's text with its tokens and syntax tree, to make edits at their positions."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")
        self.line_starts = list(itertools.accumulate((len(line) + 1 for line in self.lines), initial=0))
        self.tree = ast.parse(text)
        self.tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        in_fstrings = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.JoinedStr):  # positions inside f-strings differ by Python version
                in_fstrings.update(id(n) for n in ast.walk(node))
        self.nodes = [n for n in ast.walk(self.tree) if id(n) not in in_fstrings]

    def offset(self, row: int, col: int) -> int:
        return self.line_starts[row - 1] + col

    def start(self, node: ast.AST) -> int:
        return self._ast_offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        return self._ast_offset(node.end_lineno, node.end_col_offset)

    def _ast_offset(self, row: int, byte_col: int) -> int:
        return self.offset(row, len(self.lines[row - 1].encode()[:byte_col].decode()))

    def starts_its_line(self, node: ast.AST) -> bool:
        return not self.text[self.line_starts[node.lineno - 1] : self.start(node)].strip()

    def bracketed_tokens(self):
        """The tokens inside brackets, outside f-strings: where line breaks and spaces are free."""
        depth = in_fstring = 0
        for token in self.tokens:
            in_fstring += (token.type == FSTRING_START) - (token.type == FSTRING_END)
            if token.type == tokenize.OP and token.string in ")]}" and not in_fstring:
                depth -= 1
            if depth > 0 and not in_fstring:
                yield token
            if token.type == tokenize.OP and token.string in "([{" and not in_fstring:
                depth += 1

    def docstrings(self):
        """The docstring expressions, with the module, class or function they document."""
        for node in self.nodes:
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                first = node.body[0] if node.body else None
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    if isinstance(first.value.value, str):
                        yield node, first

    def edit(self, changes) -> str:
        """The text with each ``(start, end, replacement)`` applied (offsets into the original)."""
        text = self.text
        for start, end, replacement in sorted(changes, key=lambda c: (c[0], c[1]), reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    def token_between(self, start: int, end: int, string: str) -> tokenize.TokenInfo | None:
        """The first operator or keyword token spelt ``string`` between two offsets."""
        for token in self.tokens:
            if start <= self.offset(*token.start) < end and token.type in (tokenize.OP, tokenize.NAME):
                if token.string == string:
                    return token
        return None


# Edits that leave the code as it was: comments, docstrings, formatting.


def comments_added(src: Source) -> str:
    """A comment at the end of every line and a line of comment before every statement."""
    ends = [src.offset(*t.start) for t in src.tokens if t.type in (tokenize.NEWLINE, tokenize.NL)]
    rows = {n.lineno for n in src.nodes if isinstance(n, ast.stmt) and src.starts_its_line(n)}
    starts = [src.line_starts[row - 1] for row in rows]
    return src.edit([(at, at, "  # a note") for at in ends] + [(at, at, "# a comment\n") for at in starts])


def comments_reworded(src: Source) -> str:
    comments = [t for t in src.tokens if t.type == tokenize.COMMENT]
    return src.edit((src.offset(*t.start), src.offset(*t.end), f"# {t.string[1:][::-1]}") for t in comments)


def comments_removed(src: Source) -> str:
    comments = [t for t in src.tokens if t.type == tokenize.COMMENT]
    return src.edit((src.offset(*t.start), src.offset(*t.end), "") for t in comments)


def docstrings_reworded(src: Source) -> str:
    docs = [doc for _, doc in src.docstrings()]
    return src.edit((src.start(d), src.end(d), '"""Reworded,\n\nover two paragraphs."""') for d in docs)


def docstrings_removed(src: Source) -> str:
    """Every docstring that is not its body's only statement, with its line."""
    changes = []
    for owner, doc in src.docstrings():
        rest_of_line = src.text[src.end(doc) : src.line_starts[doc.end_lineno]]
        if len(owner.body) > 1 and src.starts_its_line(doc) and not rest_of_line.strip():
            changes.append((src.line_starts[doc.lineno - 1], src.line_starts[doc.end_lineno], ""))
    return src.edit(changes)


def docstrings_added(src: Source) -> str:
    """A docstring for every function and class without one (and for the module)."""
    documented = {id(owner) for owner, _ in src.docstrings()}
    changes = [] if id(src.tree) in documented else [(0, 0, '"""Added."""\n')]
    for node in src.nodes:
        definition = isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        if definition and id(node) not in documented:
            first = node.body[0]
            row = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
            if row > node.lineno and src.starts_its_line(first):
                at = src.line_starts[row - 1]
                changes.append((at, at, " " * first.col_offset + '"""Added."""\n'))
    return src.edit(changes)


def line_breaks_in_brackets(src: Source) -> str:
    """A line break after every opening bracket and comma and before every closing bracket."""
    changes = []
    for token in src.bracketed_tokens():
        if token.type == tokenize.OP and token.string in "([{,":
            changes.append((src.offset(*token.end), src.offset(*token.end), "\n"))
        if token.type == tokenize.OP and token.string in ")]}":
            changes.append((src.offset(*token.start), src.offset(*token.start), "\n"))
    return src.edit(changes)


def spaces_in_brackets(src: Source) -> str:
    """A space after every operator and punctuation inside brackets."""
    changes = [
        (src.offset(*t.end), src.offset(*t.end), " ") for t in src.bracketed_tokens() if t.type == tokenize.OP
    ]
    return src.edit(changes)


def blank_lines_added(src: Source) -> str:
    """Two blank lines before every statement."""
    rows = sorted({n.lineno for n in src.nodes if isinstance(n, ast.stmt) and src.starts_its_line(n)})
    return src.edit((src.line_starts[r - 1], src.line_starts[r - 1], "\n\n") for r in rows)


def rewritten_by_unparse(src: Source) -> str:
    """The same tree written out canonically: other quotes, parentheses, breaks and no comments."""
    return ast.unparse(src.tree)


def every_neutral_edit(src: Source) -> str:
    """Comments and docstrings reworded, comments added and calls broken over lines, together."""
    text = src.text
    for edit in (comments_reworded, docstrings_reworded, comments_added, line_breaks_in_brackets):
        text = edit(Source(text))
    return text


NEUTRAL_EDITS = [
    comments_added,
    comments_reworded,
    comments_removed,
    docstrings_reworded,
    docstrings_removed,
    docstrings_added,
    line_breaks_in_brackets,
    spaces_in_brackets,
    blank_lines_added,
    rewritten_by_unparse,
    every_neutral_edit,
]


# Edits that change what the code computes, one variant per place in the module.


def constants_changed(src: Source):
    """Each number, string (not a docstring) and bytes literal changed, one at a time."""
    docstrings = {id(doc.value) for _, doc in src.docstrings()}
    for node in src.nodes:
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            continue
        if isinstance(value, int | float) and value + 1 != value:
            yield src.edit([(src.start(node), src.end(node), repr(value + 1))])
        elif isinstance(value, str | bytes):
            suffix = "x" if isinstance(value, str) else b"x"
            yield src.edit([(src.start(node), src.end(node), repr(value + suffix))])


# The operator's spelling, and what it becomes.
SWAPPED = {
    **{ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*")},
    **{ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"), ast.MatMult: ("@", "*")},
    **{ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<"), ast.BitOr: ("|", "&"), ast.BitAnd: ("&", "|")},
    **{ast.BitXor: ("^", "|"), ast.Invert: ("~", "-"), ast.UAdd: ("+", "-"), ast.USub: ("-", "+")},
    **{ast.Lt: ("<", ">"), ast.Gt: (">", "<"), ast.LtE: ("<=", ">="), ast.GtE: (">=", "<=")},
    **{ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not", "")},
    **{ast.Is: ("is", "is not"), ast.IsNot: ("not", ""), ast.Not: ("not", "")},
    **{ast.And: ("and", "or"), ast.Or: ("or", "and")},
}


def operators_changed(src: Source):
    """Each binary, augmented, boolean, comparison and unary operator swapped, one at a time."""
    for node in src.nodes:
        places = []  # (operator, start, end): the operator is written between the two offsets
        if isinstance(node, ast.BinOp):
            places = [(node.op, src.end(node.left), src.start(node.right))]
        elif isinstance(node, ast.AugAssign):
            places = [(node.op, src.end(node.target), src.start(node.value))]
        elif isinstance(node, ast.BoolOp):
            places = [(node.op, src.end(a), src.start(b)) for a, b in itertools.pairwise(node.values)]
        elif isinstance(node, ast.Compare):
            pairs = itertools.pairwise([node.left, *node.comparators])
            places = [(op, src.end(a), src.start(b)) for op, (a, b) in zip(node.ops, pairs, strict=True)]
        elif isinstance(node, ast.UnaryOp):
            places = [(node.op, src.start(node), src.start(node.operand))]
        for op, start, end in places:
            spelling, replacement = SWAPPED[type(op)]
            if isinstance(node, ast.AugAssign):
                spelling, replacement = spelling + "=", replacement + "="
            token = src.token_between(start, end, spelling)
            assert token is not None, (ast.unparse(node), src.text[start:end])
            yield src.edit([(src.offset(*token.start), src.offset(*token.end), replacement)])


def called_names_changed(src: Source):
    """Each called function's or method's name changed, one at a time."""
    for node in src.nodes:
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            start, end, name = src.start(func), src.end(func), func.id
        elif isinstance(func, ast.Attribute):
            start, end, name = src.end(func) - len(func.attr), src.end(func), func.attr
        else:
            continue
        assert src.text[start:end] == name
        yield src.edit([(start, end, name + "_renamed")])


CODE_EDITS = [constants_changed, operators_changed, called_names_changed]
