//! Exact tail probabilities of the binomial, Poisson and hypergeometric distributions, computed in
//! log space: no normal or other approximation of the distribution, only floating-point rounding.
//!
//! Each tail is a sum of probability mass terms. The first term is computed from log-factorials
//! (exact sums of logarithms below 32, Stirling's series with terms to `n^-7` from 32 on, whose
//! error is below `10^-16`); the following terms by their exact ratios to the previous one. A
//! tail is always summed from the side of the mode outwards, where terms only decrease, and the
//! sum stops once a geometric bound on everything left is below `10^-17` of the sum. When the
//! asked-for tail contains the mode, the other tail is summed and subtracted from 1 (the result
//! is then a large probability, far from any test threshold, where an absolute error of `10^-16`
//! does not matter).

use std::f64::consts::PI;

/// Relative size of the remainder at which a sum stops.
const TAIL_EPSILON: f64 = 1e-17;

/// `ln(n!)`.
#[must_use]
pub fn ln_factorial(n: u64) -> f64 {
    if n < 32 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    let x2 = x * x;
    // Stirling's series: ln n! = n ln n - n + ln(2 pi n)/2 + 1/(12n) - 1/(360n^3) + 1/(1260n^5)
    // - 1/(1680n^7) + ...; the next term, 1/(1188 n^9), is below 10^-16 for n >= 32.
    x * x.ln() - x + 0.5 * (2.0 * PI * x).ln() + 1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2)
        + 1.0 / (1260.0 * x * x2 * x2)
        - 1.0 / (1680.0 * x * x2 * x2 * x2)
}

/// `ln(n choose k)`; `-inf` when `k > n`.
#[must_use]
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// `ln` of the sum of terms `t_start, t_next, ...` up to and including index `end`, walking up or
/// down; `ln_first = ln t_start`, `ratio(i) = t_next(i) / t_i`. The ratios must be non-increasing
/// along the walk and at most 1 from the start (the walk leaves the mode), which makes
/// `term * r / (1 - r)` a bound on all terms after `term`.
fn ln_sum_outwards(
    ln_first: f64,
    start: u64,
    end: u64,
    up: bool,
    ratio: impl Fn(u64) -> f64,
) -> f64 {
    let mut sum = 1.0f64;
    let mut term = 1.0f64;
    let mut i = start;
    while i != end {
        let r = ratio(i);
        if r.is_nan() || r <= 0.0 {
            break;
        }
        term *= r;
        sum += term;
        i = if up {
            i.saturating_add(1)
        } else {
            i.saturating_sub(1)
        };
        if term == 0.0 || (r < 1.0 && term * r / (1.0 - r) <= sum * TAIL_EPSILON) {
            break;
        }
    }
    ln_first + sum.ln()
}

/// `P(X >= x)` for `X ~ Binomial(n, p)`.
#[must_use]
pub fn binomial_sf(x: u64, n: u64, p: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if x > n || p <= 0.0 || p.is_nan() {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let odds = p / (1.0 - p);
    let ln_term = |i: u64| ln_choose(n, i) + i as f64 * ln_p + (n - i) as f64 * ln_q;
    // t(i+1) / t(i)
    let up = |i: u64| (n - i) as f64 / (i + 1) as f64 * odds;
    if x == n || up(x) <= 1.0 {
        ln_sum_outwards(ln_term(x), x, n, true, up).exp().min(1.0)
    } else {
        // x is below the mode: 1 - P(X <= x - 1), summed downwards from x - 1.
        let down = |i: u64| i as f64 / (n - i + 1) as f64 / odds;
        let lower = ln_sum_outwards(ln_term(x - 1), x - 1, 0, false, down).exp();
        (1.0 - lower).clamp(0.0, 1.0)
    }
}

/// `P(X >= x)` for `X ~ Poisson(mu)`.
#[must_use]
pub fn poisson_sf(x: u64, mu: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if mu <= 0.0 || mu.is_nan() {
        return 0.0;
    }
    if mu.is_infinite() {
        return 1.0;
    }
    let ln_mu = mu.ln();
    let ln_term = |i: u64| -mu + i as f64 * ln_mu - ln_factorial(i);
    let up = |i: u64| mu / (i + 1) as f64;
    if up(x) <= 1.0 {
        ln_sum_outwards(ln_term(x), x, u64::MAX, true, up)
            .exp()
            .min(1.0)
    } else {
        let down = |i: u64| i as f64 / mu;
        let lower = ln_sum_outwards(ln_term(x - 1), x - 1, 0, false, down).exp();
        (1.0 - lower).clamp(0.0, 1.0)
    }
}

/// `P(X >= x)` for `X` the number of marked items among `draws` drawn without replacement from a
/// population of `population` items of which `marked` are marked (Fisher's exact test's one-sided
/// p-value). Arguments out of range (`marked` or `draws` above `population`) give `NaN`.
#[must_use]
pub fn hypergeometric_sf(x: u64, draws: u64, marked: u64, population: u64) -> f64 {
    if marked > population || draws > population {
        return f64::NAN;
    }
    let unmarked = population - marked;
    let lo = draws.saturating_sub(unmarked);
    let hi = draws.min(marked);
    if x <= lo {
        return 1.0;
    }
    if x > hi {
        return 0.0;
    }
    let ln_total = ln_choose(population, draws);
    let ln_term = |i: u64| ln_choose(marked, i) + ln_choose(unmarked, draws - i) - ln_total;
    // t(i+1) / t(i) = (marked - i)(draws - i) / ((i + 1)(unmarked - draws + i + 1))
    let up = |i: u64| {
        (marked - i) as f64 * (draws - i) as f64
            / ((i + 1) as f64 * (unmarked as f64 - draws as f64 + i as f64 + 1.0))
    };
    if x == hi || up(x) <= 1.0 {
        ln_sum_outwards(ln_term(x), x, hi, true, up).exp().min(1.0)
    } else {
        // t(i-1) / t(i) = i (unmarked - draws + i) / ((marked - i + 1)(draws - i + 1))
        let down = |i: u64| {
            i as f64 * (unmarked as f64 - draws as f64 + i as f64)
                / ((marked - i + 1) as f64 * (draws - i + 1) as f64)
        };
        let lower = ln_sum_outwards(ln_term(x - 1), x - 1, lo, false, down).exp();
        (1.0 - lower).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative agreement (1e-9: the log-factorial differences of large arguments lose some
    /// digits), or absolute 1e-13 for values near 1 computed as complements.
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-9 * want.abs() || (got - want).abs() <= 1e-13
    }

    // Expected values computed exactly in Python: binomial and hypergeometric with
    // `fractions.Fraction` (the float arguments converted exactly) and `math.comb`, Poisson with
    // `decimal` at 60 digits; then rounded once to f64. (scipy is not on this machine.)

    #[test]
    fn binomial_against_exact_values() {
        let cases: &[(u64, u64, f64, f64)] = &[
            (3, 3, 1.0 / 101.0, 9.705901479276445e-07),
            (5, 20, 0.1, 0.04317449528446339),
            (1, 10, 0.5, 0.9990234375),
            (15, 20, 0.5, 0.020694732666015625),
            (60, 1000, 0.03, 5.802225924157987e-07),
            (20, 1000, 0.03, 0.9795881466567132),
            (2, 10000, 0.0001, 0.26424111735051853),
            (300, 5000, 0.05, 0.0008783392813567539),
            (1, 1, 0.25, 0.25),
            (7, 200, 200.0 / 20200.0, 0.0040725326445845075),
            (120, 2520, 2400.0 / 242400.0, 1.9868718798635577e-43),
            (3, 1000, 0.03, 0.9999999999698657),
            (290, 5000, 0.06, 0.7323498730230987),
        ];
        for &(x, n, p, want) in cases {
            let got = binomial_sf(x, n, p);
            assert!(
                close(got, want),
                "binomial_sf({x}, {n}, {p}) = {got}, want {want}"
            );
        }
        assert_eq!(binomial_sf(0, 5, 0.3), 1.0);
        assert_eq!(binomial_sf(6, 5, 0.3), 0.0);
        assert_eq!(binomial_sf(1, 5, 0.0), 0.0);
        assert_eq!(binomial_sf(5, 5, 1.0), 1.0);
    }

    #[test]
    fn poisson_against_exact_values() {
        let cases: &[(u64, f64, f64)] = &[
            (1, 0.5, 0.3934693402873666),
            (5, 0.5, 0.00017211562995584078),
            (10, 2.4, 0.0002015412715667247),
            (3, 0.001, 1.6654171665278076e-10),
            (40, 20.0, 5.3202025112462175e-05),
            (10, 20.0, 0.9950045876916924),
            (250, 200.0, 0.0003620704582896931),
            (1, 1e-9, 9.999999995e-10),
        ];
        for &(x, mu, want) in cases {
            let got = poisson_sf(x, mu);
            assert!(
                close(got, want),
                "poisson_sf({x}, {mu}) = {got}, want {want}"
            );
        }
        assert_eq!(poisson_sf(0, 3.0), 1.0);
        assert_eq!(poisson_sf(1, 0.0), 0.0);
    }

    #[test]
    fn hypergeometric_against_exact_values() {
        let cases: &[(u64, u64, u64, u64, f64)] = &[
            (8, 100, 108, 10100, 1.0849827424130686e-05),
            (10, 100, 110, 10100, 1.1857734507926456e-07),
            (1, 100, 1, 10100, 0.009900990099009901),
            (3, 10, 5, 30, 0.19123405330301882),
            (0, 10, 5, 30, 1.0),
            (2, 100, 205, 10100, 0.606141847741234),
            (12, 100, 112, 10100, 8.829851644752598e-10),
            (40, 1000, 400, 11000, 0.28396973779499274),
            // Below the mode (1 - the lower tail):
            (1, 100, 205, 10100, 0.8726487173380356),
            (30, 1000, 400, 11000, 0.8904139677574462),
            (2, 10, 5, 30, 0.5512188960464822),
        ];
        for &(x, draws, marked, pop, want) in cases {
            let got = hypergeometric_sf(x, draws, marked, pop);
            assert!(
                close(got, want),
                "hypergeometric_sf({x}, {draws}, {marked}, {pop}) = {got}, want {want}"
            );
        }
        assert_eq!(hypergeometric_sf(6, 10, 5, 30), 0.0);
        assert!(hypergeometric_sf(1, 10, 31, 30).is_nan());
    }

    #[test]
    fn ln_factorial_against_lgamma() {
        // Python's math.lgamma(n + 1).
        let cases: &[(u64, f64)] = &[
            (0, 0.0),
            (1, 0.0),
            (2, std::f64::consts::LN_2),
            (10, 15.104412573075514),
            (31, 78.0922235533153),
            (32, 81.55795945611503),
            (33, 85.05446701758152),
            (100, 363.73937555556347),
            (1000, 5912.128178488163),
            (1_000_000, 12815518.384658169),
        ];
        for &(n, want) in cases {
            let got = ln_factorial(n);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "ln_factorial({n}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn large_counts_are_fast_and_sane() {
        // A million events: the walk stops after a few thousand terms, and both tails add to 1.
        let upper = binomial_sf(500_500, 1_000_000, 0.5);
        let lower_complement = binomial_sf(499_501, 1_000_000, 0.5);
        assert!(upper > 0.15 && upper < 0.17, "{upper}");
        assert!((upper - (1.0 - lower_complement)).abs() < 1e-9);
        let p = poisson_sf(1_100_000, 1_000_000.0);
        assert!(p < 1e-200, "{p}");
    }
}
