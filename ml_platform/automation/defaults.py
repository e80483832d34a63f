"""Which automation starts running by itself: everything in prod, nothing on a laptop unless
``ML_PLATFORM_AUTOMATION=on``. The replay clock never starts by itself."""

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from ml_platform.config import load_settings


def sensor_status() -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if load_settings().automation_on else DefaultSensorStatus.STOPPED


def schedule_status() -> DefaultScheduleStatus:
    return DefaultScheduleStatus.RUNNING if load_settings().automation_on else DefaultScheduleStatus.STOPPED
