//! Duration histograms: explicit buckets (upper bounds inclusive, as the SDKs and the
//! collector's `sort.SearchFloat64s` place values) and base-2 exponential buckets (the
//! OTLP exponential histogram, built as the collector's `go-expohisto`: it starts at
//! scale 20 and lowers the scale whenever the values would need more than `max_size`
//! buckets). Counts are weights (a span's adjusted count), rounded when sent.

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;

/// The finest scale an exponential histogram starts at.
const MAX_SCALE: i32 = 20;

/// A histogram's counts, by kind.
#[derive(Debug)]
pub enum Histogram {
    Explicit(Explicit),
    Exponential(Exponential),
}

/// Counts per explicit bucket (one more than bounds: the last is above every bound).
#[derive(Debug)]
pub struct Explicit {
    pub counts: Vec<f64>,
    pub sum: f64,
}

impl Explicit {
    pub fn new(bounds: usize) -> Explicit {
        Explicit {
            counts: vec![0.0; bounds + 1],
            sum: 0.0,
        }
    }

    /// Adds `weight` values of `duration_ns` (`value` in the histogram's unit); bounds
    /// in nanoseconds, increasing.
    #[inline]
    pub fn record(&mut self, bounds_ns: &[u64], duration_ns: u64, value: f64, weight: f64) {
        let bucket = bounds_ns.partition_point(|&bound| bound < duration_ns);
        self.counts[bucket] += weight;
        self.sum += value * weight;
    }

    /// The rounded bucket counts and their total.
    pub fn rounded(&self) -> (Vec<u64>, u64) {
        let counts: Vec<u64> = self.counts.iter().map(|&c| round(c)).collect();
        let total = counts.iter().sum();
        (counts, total)
    }
}

/// A base-2 exponential histogram of non-negative values.
#[derive(Debug)]
pub struct Exponential {
    pub scale: i32,
    /// Index of `counts[0]` at `scale`.
    pub offset: i32,
    pub counts: Vec<f64>,
    pub zero: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Exponential {
    pub fn new() -> Exponential {
        Exponential {
            scale: MAX_SCALE,
            offset: 0,
            counts: Vec::new(),
            zero: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds `weight` values of `value` (non-negative), keeping at most `max_size`
    /// buckets.
    pub fn record(&mut self, value: f64, weight: f64, max_size: usize) {
        self.sum += value * weight;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if value <= 0.0 {
            self.zero += weight;
            return;
        }
        let mut index = map_to_index(value, self.scale);
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(weight);
            return;
        }
        let low = self.offset.min(index);
        let high = self.last_index().max(index);
        let change = scale_change(low, high, max_size);
        if change > 0 {
            self.downscale(change);
            index = map_to_index(value, self.scale);
        }
        self.cover(index);
        self.counts[(index - self.offset) as usize] += weight;
    }

    fn last_index(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    /// Grows the buckets to include `index`.
    fn cover(&mut self, index: i32) {
        if index < self.offset {
            let missing = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0.0, missing));
            self.offset = index;
        } else if index > self.last_index() {
            self.counts.resize((index - self.offset) as usize + 1, 0.0);
        }
    }

    /// Lowers the scale by `change`, merging each `2^change` neighbouring buckets.
    fn downscale(&mut self, change: i32) {
        let offset = self.offset >> change;
        let mut counts = vec![0.0; ((self.last_index() >> change) - offset) as usize + 1];
        for (at, &count) in self.counts.iter().enumerate() {
            counts[(((self.offset + at as i32) >> change) - offset) as usize] += count;
        }
        self.counts = counts;
        self.offset = offset;
        self.scale -= change;
    }

    /// The rounded zero count, positive buckets and total count.
    pub fn rounded(&self) -> (u64, Buckets, u64) {
        let zero = round(self.zero);
        let bucket_counts: Vec<u64> = self.counts.iter().map(|&c| round(c)).collect();
        let total = zero + bucket_counts.iter().sum::<u64>();
        let buckets = Buckets {
            offset: self.offset,
            bucket_counts,
        };
        (zero, buckets, total)
    }
}

/// How much to lower the scale so that indexes `low..=high` fit in `max_size` buckets.
fn scale_change(mut low: i32, mut high: i32, max_size: usize) -> i32 {
    let mut change = 0;
    while (high - low) as usize >= max_size {
        high >>= 1;
        low >>= 1;
        change += 1;
    }
    change
}

/// The bucket of a positive normal `value` at `scale`: bucket `i` holds values in
/// `(2^(i/2^scale), 2^((i+1)/2^scale)]`, so exact powers of two close their bucket.
pub fn map_to_index(value: f64, scale: i32) -> i32 {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let power_of_two = bits & ((1 << 52) - 1) == 0;
    if scale <= 0 {
        return (exponent - i32::from(power_of_two)) >> -scale;
    }
    if power_of_two {
        return (exponent << scale) - 1;
    }
    let factor = std::f64::consts::LOG2_E * f64::from(1u32 << scale);
    (value.ln() * factor).floor() as i32
}

/// A count as sent: the nearest integer.
pub fn round(count: f64) -> u64 {
    count.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_bounds_are_inclusive() {
        let bounds = [2_000_000, 4_000_000];
        let mut histogram = Explicit::new(2);
        for ns in [0, 2_000_000, 2_000_001, 4_000_000, 4_000_001] {
            histogram.record(&bounds, ns, ns as f64 / 1e6, 1.0);
        }
        assert_eq!(histogram.rounded(), (vec![2, 2, 1], 5));
    }

    #[test]
    fn exponential_index_matches_the_specification() {
        // scale 0: bucket i holds (2^i, 2^(i+1)]
        assert_eq!(map_to_index(1.0, 0), -1);
        assert_eq!(map_to_index(1.5, 0), 0);
        assert_eq!(map_to_index(2.0, 0), 0);
        assert_eq!(map_to_index(4.0, -1), 0);
        assert_eq!(map_to_index(5.0, -1), 1);
        // scale 1: boundaries at powers of sqrt(2)
        assert_eq!(map_to_index(2.0, 1), 1);
        assert_eq!(map_to_index(1.3, 1), 0);
        assert_eq!(map_to_index(1.5, 1), 1);
    }

    #[test]
    fn exponential_lowers_its_scale_to_fit_max_size() {
        let mut histogram = Exponential::new();
        for value in [1.0, 10.0, 100.0, 1000.0, 0.0] {
            histogram.record(value, 2.0, 8);
        }
        assert!(histogram.counts.len() <= 8);
        let (zero, buckets, total) = histogram.rounded();
        assert_eq!((zero, total), (2, 10));
        assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 8);
        // every value lies in the bucket its index names at the final scale
        for value in [1.0, 10.0, 100.0, 1000.0] {
            let at = map_to_index(value, histogram.scale) - histogram.offset;
            assert_eq!(histogram.counts[at as usize], 2.0, "{value}");
        }
        assert_eq!((histogram.min, histogram.max), (0.0, 1000.0));
    }
}
