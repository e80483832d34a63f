-- Arrivals as they happened: the flight, its arrival delay and the instant it arrived.
select
    {{ flight_id() }} as flight_id,
    carrier,
    flight,
    origin,
    dest,
    arr_delay,
    arr_at,
    event_hour
from {{ source('raw', 'arrivals') }}
