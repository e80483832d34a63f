-- One observation per airport and local hour. On the autumn DST change the local hour 01:00
-- occurs twice; the first observation is kept. Physically impossible wind speeds become null.
select
    origin,
    weather_date,
    hour,
    temp,
    dewp,
    humid,
    case when wind_speed between 0 and 200 then wind_speed end as wind_speed,
    precip,
    pressure,
    visib
from {{ source('raw', 'weather') }}
qualify row_number() over (partition by origin, weather_date, hour order by time_hour) = 1
