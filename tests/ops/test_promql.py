"""The PromQL reader the ops tests rely on finds names and labels, and no more."""

from tests.ops.promql import read


def test_reads_names_labels_and_grouping() -> None:
    u = read(
        'sum by (tier, le) (rate(sla_breaches_total{sla="first_response", tier!~"bot|x"}'
        "[$__rate_interval])) / on(tier) group_left max(router_queue_depth) * 60"
    )
    assert u.metrics == {"sla_breaches_total": {"sla", "tier"}, "router_queue_depth": set()}
    assert u.grouping_labels == {"tier", "le"}


def test_ignores_functions_keywords_numbers_strings_and_durations() -> None:
    u = read(
        'histogram_quantile(0.99, sum by (le) (rate(x_bucket{le=~"30(\\\\.0)?"}[5m] offset 1h)))'
        " > 1e3 and bool up == 0 or vector(1)"
    )
    assert set(u.metrics) == {"x_bucket", "up"}


def test_recorded_names_and_bare_names() -> None:
    u = read('ticketflow:sla_breach_ratio:rate5m{sla="first_response"} > 0.05 unless absent_x')
    assert set(u.metrics) == {"ticketflow:sla_breach_ratio:rate5m", "absent_x"}


def test_a_misspelt_name_is_a_name() -> None:
    assert set(read("sum(rate(sla_breach_total[5m]))").metrics) == {"sla_breach_total"}
