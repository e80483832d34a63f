"""Which automation starts running by itself: everything in prod, nothing on a laptop unless
``ML_PLATFORM_AUTOMATION=on``. The replay clock never starts by itself."""

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from ml_platform.config import Settings


def sensor_status(settings: Settings) -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if settings.automation_on else DefaultSensorStatus.STOPPED


def schedule_status(settings: Settings) -> DefaultScheduleStatus:
    return DefaultScheduleStatus.RUNNING if settings.automation_on else DefaultScheduleStatus.STOPPED
