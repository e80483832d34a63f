-- One row per flight of the partition window, with what is known before departure and the
-- label. Only the window is built (into features_staging, dbt_project.yml) and tested there; the
-- Dagster step publishes it into features.flight_features once every blocking test passed.
with flights as (
    select * from {{ ref('stg_flights') }}
    where {{ in_window('flight_date') }}
),

weather as (
    select * from {{ ref('stg_weather') }}
    where {{ in_window('weather_date') }}
)

select
    f.flight_id,
    f.flight_date,
    f.carrier,
    f.origin,
    f.dest,
    f.distance,
    f.sched_dep_hour,
    isodow(f.flight_date) as day_of_week,
    month(f.flight_date) as month,
    w.temp,
    w.dewp,
    w.humid,
    w.wind_speed,
    w.precip,
    w.pressure,
    w.visib,
    case when p.year_built is not null then year(f.flight_date) - p.year_built end as plane_age,
    -- Late means more than 15 minutes; cancelled or diverted flights have no label.
    case when f.arr_delay is null then null else f.arr_delay > 15 end as arrived_late
from flights as f
left join weather as w
    on w.origin = f.origin
    and w.weather_date = f.flight_date
    and w.hour = f.sched_dep_hour
left join {{ ref('stg_planes') }} as p
    on p.tailnum = f.tailnum
