//! Reading a Prometheus text exposition in tests, with an independent parser
//! (`prometheus-parse`), strictly: every line must be blank, a `HELP`, a `TYPE` or a sample
//! with a numeric value, so that text the parser would skip fails the test instead.

use prometheus_parse::{LineInfo, Sample, Value};

/// A parsed scrape.
#[derive(Debug)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses `text`.
    ///
    /// # Panics
    /// A line is neither blank, a `HELP`, a `TYPE`, nor a sample with a numeric value.
    pub fn parse(text: &str) -> Scrape {
        for (n, line) in text.lines().enumerate() {
            let understood = match LineInfo::parse(line) {
                LineInfo::Ignored => false,
                LineInfo::Sample { value, .. } => {
                    value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value)
                }
                _ => true,
            };
            assert!(
                understood,
                "line {} is not Prometheus text: {line:?}\n{text}",
                n + 1
            );
        }
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the text parses");
        assert!(!scrape.samples.is_empty(), "no samples in:\n{text}");
        Scrape {
            samples: scrape.samples,
        }
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The sum of the counter `name` over the series whose labels include `labels` (0 when
    /// there is none).
    ///
    /// # Panics
    /// A matching series is not a counter.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match s.value {
                Value::Counter(v) => v,
                ref other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The value of the one gauge series `name` whose labels include `labels`.
    ///
    /// # Panics
    /// There is not exactly one such series, or it is not a gauge.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        match found[0].value {
            Value::Gauge(v) => v,
            ref other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    /// The number of observations of the histogram `name` over the series whose labels
    /// include `labels` (0 when there is none).
    ///
    /// # Panics
    /// A matching series is not a histogram, or its `+Inf` bucket and `_count` differ.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for series in self.matching(name, labels) {
            let Value::Histogram(buckets) = &series.value else {
                panic!("{name} is not a histogram: {series:?}")
            };
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count);
            let series_labels: Vec<(&str, &str)> = series
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count_name = format!("{name}_count");
            let counts: Vec<f64> = self
                .matching(&count_name, &series_labels)
                .filter(|s| s.labels.len() == series.labels.len())
                .map(|s| match s.value {
                    Value::Untyped(v) | Value::Counter(v) => v,
                    ref other => panic!("{count_name}: {other:?}"),
                })
                .collect();
            assert_eq!(counts.len(), 1, "{count_name} {series_labels:?}");
            assert_eq!(
                inf,
                Some(counts[0]),
                "{name} {series_labels:?}: the +Inf bucket is the count"
            );
            total += counts[0];
        }
        total
    }

    /// The sum of the observations of the histogram `name` over the series whose labels
    /// include `labels` (its `_sum` samples; 0 when there is none).
    pub fn histogram_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let sum_name = format!("{name}_sum");
        self.matching(&sum_name, labels)
            .map(|s| match s.value {
                Value::Untyped(v) | Value::Counter(v) => v,
                ref other => panic!("{sum_name}: {other:?}"),
            })
            .sum()
    }
}
