-- The planned flights, known before their day, keyed like stg_flights.
select
    {{ flight_id() }} as flight_id,
    flight_date,
    carrier,
    flight,
    tailnum,
    origin,
    dest,
    distance,
    hour as sched_dep_hour,
    sched_dep_at,
    sched_arr_at
from {{ source('raw', 'schedule') }}
