select
    tailnum,
    cast(year as integer) as year_built,
    manufacturer,
    seats
from {{ source('raw', 'planes') }}
