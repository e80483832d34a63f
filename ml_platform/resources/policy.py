"""Thresholds that govern models, as one typed resource so each environment can set its own."""

from dagster import ConfigurableResource
from pydantic import Field


class ModelPolicy(ConfigurableResource):
    decision_threshold: float = Field(
        default=0.3, gt=0, lt=1, description="Probability above which a flight is predicted late"
    )
    promotion_auc_floor: float = Field(default=0.65, description="Holdout AUC a champion must reach")
    quality_min_auc: float = Field(default=0.6, description="Daily AUC below which quality fails")
    drift_max_psi: float = Field(default=0.25, description="Weekly PSI limit of non-weather features")
    drift_max_psi_weather: float = Field(default=1.0, description="Weekly PSI limit of weather features")
    fit_threads: int = Field(default=1, ge=1, description="Threads one model fit may use")

    def psi_limit(self, feature: str, weather_features: set[str]) -> float:
        """Weather is autocorrelated over a week, so its PSI has a wider tolerance."""
        return self.drift_max_psi_weather if feature in weather_features else self.drift_max_psi
