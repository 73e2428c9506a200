//! How far a mean of a few noisy rounds can be trusted: a 95% confidence interval.
//!
//! These machines scatter ±15–30% between runs of the same configuration, so a four-round
//! mean alone cannot say whether a target is met. Students' t is written out here for the
//! few round counts a suite uses; no statistics crate is worth a dependency for one table.

/// A mean and its 95% confidence interval (Student's t, the rounds taken as independent).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060,
    2.056, 2.052, 2.048, 2.045, 2.042,
];

impl Interval {
    /// None for fewer than two values: one round has no spread to judge by.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n < 2 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // Past 30 degrees of freedom the normal quantile is within 2% of t.
        let t = T95.get(n - 2).copied().unwrap_or(1.96);
        let half = t * (variance / n as f64).sqrt();
        Some(Self { mean, low: mean - half, high: mean + half })
    }

    /// Against a target the mean must reach (`at_least`) or stay under: met, missed, or
    /// within the noise when the interval holds the target.
    pub fn verdict(&self, target: f64, at_least: bool) -> &'static str {
        let (good, bad) = if at_least { (self.low >= target, self.high < target) } else { (self.high <= target, self.low > target) };
        match (good, bad) {
            (true, _) => "met",
            (_, true) => "missed",
            _ => "not decided: the target is within the interval",
        }
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} (95% interval {:.3}–{:.3})", self.mean, self.low, self.high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_verdicts() {
        assert_eq!(Interval::of(&[1.0]), None);
        let i = Interval::of(&[0.9, 1.0, 1.1, 1.0]).expect("four values");
        assert!((i.mean - 1.0).abs() < 1e-9);
        // s = 0.0816, s/√4 = 0.0408, × 3.182 = 0.130.
        assert!((i.high - 1.130).abs() < 1e-3 && (i.low - 0.870).abs() < 1e-3, "{i:?}");
        assert_eq!(i.verdict(0.95, true), "not decided: the target is within the interval");
        assert_eq!(i.verdict(0.8, true), "met");
        assert_eq!(i.verdict(1.2, true), "missed");
        assert_eq!(i.verdict(1.2, false), "met");
        assert_eq!(i.verdict(0.8, false), "missed");
        assert_eq!(i.to_string(), "1.000 (95% interval 0.870–1.130)");
    }
}
