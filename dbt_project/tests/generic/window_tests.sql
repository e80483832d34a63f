{# Tests scoped to the partition window Dagster passes, so a day's build checks that day. #}

{% test unique_in_window(model, column_name) %}
select {{ column_name }}, count(*) as n
from {{ model }}
where {{ in_window('flight_date') }}
group by 1
having count(*) > 1
{% endtest %}

{% test between(model, column_name, min_value, max_value) %}
select flight_id, flight_date, {{ column_name }}
from {{ model }}
where {{ in_window('flight_date') }}
  and ({{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }})
{% endtest %}

{% test row_count_matches_flights(model) %}
-- Every raw flight of the window has exactly one feature row, and no more.
with features as (
    select flight_date, count(*) as n from {{ model }} where {{ in_window('flight_date') }} group by 1
),
raw as (
    select flight_date, count(*) as n from {{ source('raw', 'flights') }}
    where {{ in_window('flight_date') }} group by 1
)
select coalesce(f.flight_date, r.flight_date) as flight_date, f.n as feature_rows, r.n as raw_rows
from features f full outer join raw r on f.flight_date = r.flight_date
where coalesce(f.n, 0) != coalesce(r.n, 0)
{% endtest %}

{% test weather_joined(model) %}
-- Days of the window where most flights found no weather at their origin and hour: upstream
-- delivered no weather (2013-12-31 in the packaged data). Features keep null weather; this warns.
select flight_date, count(*) as flights, count(temp) as with_weather
from {{ model }}
where {{ in_window('flight_date') }}
group by 1
having count(temp) < 0.5 * count(*)
{% endtest %}

{% test row_count_matches_schedule(model) %}
-- Every scheduled flight of the window has exactly one feature row, and no more.
with features as (
    select flight_date, count(*) as n from {{ model }} where {{ in_window('flight_date') }} group by 1
),
planned as (
    select flight_date, count(*) as n from {{ source('raw', 'schedule') }}
    where {{ in_window('flight_date') }} group by 1
)
select coalesce(f.flight_date, p.flight_date) as flight_date, f.n as feature_rows, p.n as planned_rows
from features f full outer join planned p on f.flight_date = p.flight_date
where coalesce(f.n, 0) != coalesce(p.n, 0)
{% endtest %}
