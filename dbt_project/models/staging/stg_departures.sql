-- Departures as they happened: the flight, its departure delay and the instant it left.
select
    {{ flight_id() }} as flight_id,
    carrier,
    flight,
    origin,
    tailnum,
    dep_delay,
    dep_at,
    event_hour
from {{ source('raw', 'departures') }}
