-- One weather observation per origin and instant (the first delivered, should one repeat).
select
    origin,
    time_hour,
    temp,
    humid,
    case when wind_speed between 0 and 200 then wind_speed end as wind_speed,
    precip,
    pressure,
    visib,
    event_hour
from {{ source('raw', 'observations') }}
qualify row_number() over (partition by origin, time_hour order by event_hour) = 1
