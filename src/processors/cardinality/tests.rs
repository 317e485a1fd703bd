use super::*;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, ExponentialHistogram, Gauge, Histogram,
    ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn kv(key: &str, value: &str) -> KeyValue {
    crate::model::tests::text_attribute(key, value)
}

fn limiter(config: CardinalityConfig) -> CardinalityLimiter {
    CardinalityLimiter::new(config, "cardinality_limit", None).unwrap()
}

fn limited(limit: usize, action: Action) -> CardinalityLimiter {
    limiter(CardinalityConfig {
        limit,
        action,
        ..Default::default()
    })
}

fn batch(service: &str, metric: Metric) -> Batch {
    Batch::from_metrics(vec![ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![metric],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn point(user: &str, value: f64, time: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![kv("user", user)],
        value: Some(number_data_point::Value::AsDouble(value)),
        time_unix_nano: time,
        ..Default::default()
    }
}

fn sum(points: Vec<NumberDataPoint>, temporality: AggregationTemporality) -> Metric {
    Metric {
        name: "logins".into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn users(n: usize, value: f64) -> Vec<NumberDataPoint> {
    (0..n).map(|i| point(&format!("u{i}"), value, 10)).collect()
}

fn run(l: &mut CardinalityLimiter, mut b: Batch) -> Metric {
    l.limit(&mut b, Instant::now());
    b.metrics_mut()[0].scope_metrics[0].metrics[0].clone()
}

fn sum_points(m: &Metric) -> Vec<(bool, f64)> {
    let Some(Data::Sum(s)) = &m.data else {
        panic!("a sum")
    };
    s.data_points
        .iter()
        .map(|p| {
            (
                p.attributes.iter().any(|a| a.key == OVERFLOW_KEY),
                number(p),
            )
        })
        .collect()
}

#[test]
fn cumulative_sums_overflow_into_one_series_and_keep_the_total() {
    let mut l = limited(2, Action::Overflow);
    let first = sum_points(&run(
        &mut l,
        batch("a", sum(users(5, 1.0), AggregationTemporality::Cumulative)),
    ));
    assert_eq!(first, vec![(false, 1.0), (false, 1.0), (true, 3.0)]);
    // the next collection reports every series again, cumulatively
    let second = sum_points(&run(
        &mut l,
        batch("a", sum(users(5, 2.0), AggregationTemporality::Cumulative)),
    ));
    assert_eq!(
        second,
        vec![(false, 2.0), (false, 2.0), (true, 6.0)],
        "the overflow series keeps the total of what it absorbed"
    );
    assert_eq!(
        l.tracked_series(),
        5,
        "2 series within the limit and 3 overflowed ones whose last value is kept"
    );
}

#[test]
fn delta_sums_overflow_by_adding() {
    let mut l = limited(1, Action::Overflow);
    let points = sum_points(&run(
        &mut l,
        batch("a", sum(users(4, 2.0), AggregationTemporality::Delta)),
    ));
    assert_eq!(points, vec![(false, 2.0), (true, 6.0)]);
}

#[test]
fn the_overflow_point_spans_the_times_of_the_points_it_folds() {
    let mut l = limited(1, Action::Overflow);
    let points = [(5, 20), (3, 30), (4, 25)]
        .into_iter()
        .enumerate()
        .map(|(i, (start, time))| NumberDataPoint {
            start_time_unix_nano: start,
            ..point(&format!("u{i}"), 1.0, time)
        })
        .collect();
    let metric = run(
        &mut l,
        batch("a", sum(points, AggregationTemporality::Cumulative)),
    );
    let Some(Data::Sum(s)) = &metric.data else {
        panic!("a sum")
    };
    let overflow = &s.data_points[1];
    assert_eq!(overflow.attributes, overflow_attributes());
    assert_eq!(
        (overflow.start_time_unix_nano, overflow.time_unix_nano),
        (3, 30),
        "earliest start, latest time of the folded points"
    );
}

#[test]
fn drop_action_drops_new_series_only() {
    let mut l = limited(2, Action::Drop);
    assert_eq!(
        sum_points(&run(
            &mut l,
            batch("a", sum(users(5, 1.0), AggregationTemporality::Cumulative))
        ))
        .len(),
        2
    );
    let again = sum_points(&run(
        &mut l,
        batch(
            "a",
            sum(
                vec![point("u0", 9.0, 20)],
                AggregationTemporality::Cumulative,
            ),
        ),
    ));
    assert_eq!(
        again,
        vec![(false, 9.0)],
        "series seen before the limit keep flowing"
    );
}

#[test]
fn gauges_keep_the_last_value() {
    let mut l = limited(1, Action::Overflow);
    let gauge = Metric {
        name: "temp".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![point("a", 1.0, 1), point("b", 7.0, 3), point("c", 5.0, 2)],
        })),
        ..Default::default()
    };
    let m = run(&mut l, batch("a", gauge));
    let Some(Data::Gauge(g)) = &m.data else {
        panic!()
    };
    assert_eq!(
        g.data_points.iter().map(number).collect::<Vec<_>>(),
        vec![1.0, 7.0]
    );
}

#[test]
fn histograms_add_counts_sums_and_buckets() {
    let mut l = limited(1, Action::Overflow);
    let p = |user: &str, buckets: Vec<u64>| HistogramDataPoint {
        attributes: vec![kv("user", user)],
        count: buckets.iter().sum(),
        sum: Some(1.0),
        bucket_counts: buckets,
        explicit_bounds: vec![1.0],
        ..Default::default()
    };
    let histogram = Metric {
        name: "lat".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![p("a", vec![1, 1]), p("b", vec![2, 0]), p("c", vec![0, 3])],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let m = run(&mut l, batch("a", histogram));
    let Some(Data::Histogram(h)) = &m.data else {
        panic!()
    };
    let overflow = &h.data_points[1];
    assert_eq!(
        (overflow.count, overflow.sum, overflow.bucket_counts.clone()),
        (5, Some(2.0), vec![2, 3])
    );
}

#[test]
fn exponential_histograms_add_when_layouts_agree() {
    let mut l = limited(1, Action::Overflow);
    let p = |user: &str, offset: i32| ExponentialHistogramDataPoint {
        attributes: vec![kv("user", user)],
        count: 2,
        scale: 3,
        positive: Some(Buckets {
            offset,
            bucket_counts: vec![1, 1],
        }),
        ..Default::default()
    };
    let metric = Metric {
        name: "size".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p("a", 0), p("b", 0), p("c", 0), p("d", 5)],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let m = run(&mut l, batch("a", metric));
    let Some(Data::ExponentialHistogram(h)) = &m.data else {
        panic!()
    };
    assert_eq!(h.data_points.len(), 2);
    assert_eq!(
        h.data_points[1].count, 4,
        "b and c merge; d's layout differs and is dropped"
    );
    assert_eq!(
        h.data_points[1].positive.as_ref().unwrap().bucket_counts,
        vec![2, 2]
    );
}

#[test]
fn summaries_add_count_and_sum() {
    let mut l = limited(1, Action::Overflow);
    let p = |user: &str| SummaryDataPoint {
        attributes: vec![kv("user", user)],
        count: 3,
        sum: 1.5,
        ..Default::default()
    };
    let metric = Metric {
        name: "rpc".into(),
        data: Some(Data::Summary(Summary {
            data_points: vec![p("a"), p("b"), p("c")],
        })),
        ..Default::default()
    };
    let m = run(&mut l, batch("a", metric));
    let Some(Data::Summary(s)) = &m.data else {
        panic!()
    };
    assert_eq!((s.data_points[1].count, s.data_points[1].sum), (6, 3.0));
}

#[test]
fn each_resource_has_its_own_budget_unless_global() {
    let mut l = limited(2, Action::Drop);
    run(
        &mut l,
        batch(
            "noisy",
            sum(users(10, 1.0), AggregationTemporality::Cumulative),
        ),
    );
    let quiet = sum_points(&run(
        &mut l,
        batch(
            "quiet",
            sum(users(2, 1.0), AggregationTemporality::Cumulative),
        ),
    ));
    assert_eq!(
        quiet.len(),
        2,
        "the noisy service did not use the quiet one's budget"
    );
    let mut global = limiter(CardinalityConfig {
        limit: 2,
        action: Action::Drop,
        scope: Scope::Global,
        ..Default::default()
    });
    run(
        &mut global,
        batch(
            "noisy",
            sum(users(10, 1.0), AggregationTemporality::Cumulative),
        ),
    );
    let shared = sum_points(&run(
        &mut global,
        batch(
            "quiet",
            sum(
                vec![point("new", 1.0, 1)],
                AggregationTemporality::Cumulative,
            ),
        ),
    ));
    assert!(shared.is_empty());
}

#[test]
fn metric_limits_override_by_name_and_regex() {
    let config = CardinalityConfig {
        limit: 100,
        action: Action::Drop,
        metric_limits: vec![MetricLimit {
            name: None,
            name_regex: Some("^log".into()),
            limit: 1,
            action: None,
        }],
        ..Default::default()
    };
    let mut l = limiter(config);
    assert_eq!(
        sum_points(&run(
            &mut l,
            batch("a", sum(users(3, 1.0), AggregationTemporality::Cumulative))
        ))
        .len(),
        1
    );
}

#[test]
fn label_guards_drop_the_label_or_overflow() {
    let guard = |action| CardinalityConfig {
        max_values_per_label: vec![LabelLimit {
            key: "user".into(),
            max_values: 2,
            action,
        }],
        ..Default::default()
    };
    let mut dropping = limiter(guard(LabelAction::DropLabel));
    let m = run(
        &mut dropping,
        batch("a", sum(users(4, 1.0), AggregationTemporality::Delta)),
    );
    let Some(Data::Sum(s)) = &m.data else {
        panic!()
    };
    let without_user = s
        .data_points
        .iter()
        .filter(|p| p.attributes.is_empty())
        .count();
    assert_eq!(
        (s.data_points.len(), without_user),
        (4, 2),
        "past two values, the user label is removed"
    );
    let mut overflowing = limiter(guard(LabelAction::Overflow));
    let points = sum_points(&run(
        &mut overflowing,
        batch("a", sum(users(4, 1.0), AggregationTemporality::Delta)),
    ));
    assert_eq!(points, vec![(false, 1.0), (false, 1.0), (true, 2.0)]);
}

#[test]
fn idle_series_expire_and_free_their_slot() {
    let mut l = limiter(CardinalityConfig {
        limit: 1,
        action: Action::Drop,
        series_ttl: Duration::from_millis(1),
        ..Default::default()
    });
    let mut b = batch("a", sum(users(1, 1.0), AggregationTemporality::Cumulative));
    let start = Instant::now();
    l.limit(&mut b, start);
    l.sweep(start + Duration::from_millis(5));
    assert_eq!(l.tracked_series(), 0);
    let fresh = sum_points(&run(
        &mut l,
        batch(
            "a",
            sum(
                vec![point("other", 1.0, 1)],
                AggregationTemporality::Cumulative,
            ),
        ),
    ));
    assert_eq!(fresh.len(), 1, "the expired slot is free for a new series");
}

#[test]
fn idle_label_values_expire_and_free_their_place() {
    let mut l = limiter(CardinalityConfig {
        max_values_per_label: vec![LabelLimit {
            key: "user".into(),
            max_values: 1,
            action: LabelAction::Overflow,
        }],
        series_ttl: Duration::from_millis(1),
        ..Default::default()
    });
    let start = Instant::now();
    let mut first = batch("a", sum(users(1, 1.0), AggregationTemporality::Delta));
    l.limit(&mut first, start);
    let in_use = |l: &mut CardinalityLimiter, now| {
        let mut b = batch(
            "a",
            sum(vec![point("other", 1.0, 1)], AggregationTemporality::Delta),
        );
        l.limit(&mut b, now);
        sum_points(&b.metrics_mut()[0].scope_metrics[0].metrics[0])
    };
    assert_eq!(
        in_use(&mut l, start),
        vec![(true, 1.0)],
        "the guard's one value is taken"
    );
    // a series without the label stays active, so the metric's state is kept
    let later = start + Duration::from_millis(5);
    let unlabelled = NumberDataPoint {
        attributes: Vec::new(),
        ..point("", 1.0, 1)
    };
    let mut active = batch("a", sum(vec![unlabelled], AggregationTemporality::Delta));
    l.limit(&mut active, later);
    l.sweep(later);
    assert_eq!(
        in_use(&mut l, later),
        vec![(false, 1.0)],
        "the idle value expired, so a new one fits"
    );
}

#[test]
fn the_total_tracked_series_are_bounded() {
    let mut l = limiter(CardinalityConfig {
        limit: 100,
        action: Action::Drop,
        max_tracked_series: 3,
        ..Default::default()
    });
    let kept = sum_points(&run(
        &mut l,
        batch("a", sum(users(10, 1.0), AggregationTemporality::Cumulative)),
    ));
    assert_eq!((kept.len(), l.tracked_series()), (3, 3));
}

#[test]
fn overflowed_cumulative_series_count_toward_the_total_bound() {
    let mut l = limiter(CardinalityConfig {
        limit: 1,
        action: Action::Overflow,
        max_tracked_series: 3,
        ..Default::default()
    });
    let points = sum_points(&run(
        &mut l,
        batch("a", sum(users(6, 1.0), AggregationTemporality::Cumulative)),
    ));
    assert_eq!(
        points,
        vec![(false, 1.0), (true, 2.0)],
        "one within the limit, two overflowed, three over the bound dropped"
    );
    assert_eq!(l.tracked_series(), 3);
}

/// Workers share one limiter: series arriving through different workers count against
/// one limit.
#[test]
fn workers_share_one_limit() {
    let mut workers = Shared::for_workers(limited(3, Action::Drop), 2);
    let mut kept = 0;
    for (i, user) in ["u0", "u1", "u2", "u3", "u4", "u5"].iter().enumerate() {
        let mut out = Vec::new();
        let one = batch(
            "a",
            sum(vec![point(user, 1.0, 10)], AggregationTemporality::Delta),
        );
        workers[i % 2].process(one, &mut out);
        kept += out.iter().map(Batch::items).sum::<usize>();
    }
    assert_eq!(kept, 3, "three series in all, not three per worker");
}
