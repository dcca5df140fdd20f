//! Restart strategies, with Flink's names and keys: after a task failure, whether and when the
//! job restarts from its latest completed checkpoint.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sluice_core::config::{Config, parse_duration};
use sluice_core::{Result, SluiceError};

#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    None,
    FixedDelay {
        attempts: u32,
        delay: Duration,
    },
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        attempts: u32,
    },
    FailureRate {
        max_failures: u32,
        interval: Duration,
        delay: Duration,
    },
}

impl RestartStrategy {
    /// Reads `restart-strategy.*`; the default is fixed-delay with unlimited attempts (1 s) when
    /// checkpointing is on, and none otherwise (Flink's defaults).
    pub fn from_config(config: &Config) -> Result<Self> {
        let get = |k: &str| config.get_raw(k);
        let dur = |k: &str, d: Duration| -> Result<Duration> {
            match get(k) {
                None => Ok(d),
                Some(v) => parse_duration(v)
                    .ok_or_else(|| SluiceError::Config(format!("{k}: '{v}' is not a duration"))),
            }
        };
        let num = |k: &str, d: u32| -> Result<u32> {
            match get(k) {
                None => Ok(d),
                Some(v) => v
                    .parse()
                    .map_err(|_| SluiceError::Config(format!("{k}: '{v}' is not a number"))),
            }
        };
        let kind = get("restart-strategy.type").map(|s| s.to_ascii_lowercase());
        let kind = match kind.as_deref() {
            None if config.checkpoint_interval.is_some() => "fixed-delay",
            None => "none",
            Some(k) => match k {
                "none" | "off" | "disable" => "none",
                "fixed-delay" | "fixeddelay" => "fixed-delay",
                "exponential-delay" | "exponentialdelay" => "exponential-delay",
                "failure-rate" | "failurerate" => "failure-rate",
                other => {
                    return Err(SluiceError::Config(format!(
                        "restart-strategy.type: '{other}' is not one of none, fixed-delay, exponential-delay, failure-rate"
                    )));
                }
            },
        };
        Ok(match kind {
            "none" => RestartStrategy::None,
            "fixed-delay" => RestartStrategy::FixedDelay {
                attempts: num("restart-strategy.fixed-delay.attempts", u32::MAX)?,
                delay: dur("restart-strategy.fixed-delay.delay", Duration::from_secs(1))?,
            },
            "exponential-delay" => RestartStrategy::ExponentialDelay {
                initial: dur("restart-strategy.exponential-delay.initial-backoff", Duration::from_secs(1))?,
                max: dur("restart-strategy.exponential-delay.max-backoff", Duration::from_secs(60))?,
                multiplier: match get("restart-strategy.exponential-delay.backoff-multiplier") {
                    None => 1.5,
                    Some(v) => v.parse().map_err(|_| {
                        SluiceError::Config(format!("restart-strategy.exponential-delay.backoff-multiplier: '{v}' is not a number"))
                    })?,
                },
                attempts: num("restart-strategy.exponential-delay.attempts-before-reset-backoff", u32::MAX)?,
            },
            _ => RestartStrategy::FailureRate {
                max_failures: num("restart-strategy.failure-rate.max-failures-per-interval", 1)?,
                interval: dur("restart-strategy.failure-rate.failure-rate-interval", Duration::from_secs(60))?,
                delay: dur("restart-strategy.failure-rate.delay", Duration::from_secs(1))?,
            },
        })
    }
}

/// The state of a strategy over one job's lifetime.
#[derive(Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(strategy: RestartStrategy) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            failures: VecDeque::new(),
        }
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// A failure happened: `Some(delay)` to restart after `delay`, `None` to fail the job.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let decision = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (self.restarts < *attempts).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                attempts,
            } => (self.restarts < *attempts).then(|| {
                let d = initial.as_secs_f64() * multiplier.powi(self.restarts.min(64) as i32);
                Duration::from_secs_f64(d.min(max.as_secs_f64()))
            }),
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > *interval)
                {
                    self.failures.pop_front();
                }
                (self.failures.len() as u32 <= *max_failures).then_some(*delay)
            }
        };
        if decision.is_some() {
            self.restarts += 1;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[&str]) -> Config {
        Config::load(
            None,
            &pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn defaults_follow_checkpointing() {
        assert_eq!(
            RestartStrategy::from_config(&config(&[])).unwrap(),
            RestartStrategy::None
        );
        let c = config(&["execution.checkpointing.interval=1 s"]);
        assert!(matches!(
            RestartStrategy::from_config(&c).unwrap(),
            RestartStrategy::FixedDelay {
                attempts: u32::MAX,
                ..
            }
        ));
    }

    #[test]
    fn fixed_delay_counts_attempts() {
        let c = config(&[
            "restart-strategy.type=fixed-delay",
            "restart-strategy.fixed-delay.attempts=2",
            "restart-strategy.fixed-delay.delay=10 ms",
        ]);
        let mut t = RestartTracker::new(RestartStrategy::from_config(&c).unwrap());
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(10)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(10)));
        assert_eq!(t.on_failure(now), None);
    }

    #[test]
    fn exponential_backoff_grows_to_max() {
        let c = config(&[
            "restart-strategy.type=exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff=100 ms",
            "restart-strategy.exponential-delay.max-backoff=250 ms",
            "restart-strategy.exponential-delay.backoff-multiplier=2.0",
        ]);
        let mut t = RestartTracker::new(RestartStrategy::from_config(&c).unwrap());
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(100)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(200)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(250)));
    }

    #[test]
    fn failure_rate_window() {
        let c = config(&[
            "restart-strategy.type=failure-rate",
            "restart-strategy.failure-rate.max-failures-per-interval=2",
            "restart-strategy.failure-rate.failure-rate-interval=1 min",
            "restart-strategy.failure-rate.delay=0 ms",
        ]);
        let mut t = RestartTracker::new(RestartStrategy::from_config(&c).unwrap());
        let now = Instant::now();
        assert!(t.on_failure(now).is_some());
        assert!(t.on_failure(now).is_some());
        assert!(t.on_failure(now).is_none());
        assert!(t.on_failure(now + Duration::from_secs(120)).is_some());
    }

    #[test]
    fn unknown_strategy_is_an_error_naming_the_key() {
        let e = RestartStrategy::from_config(&config(&["restart-strategy.type=sometimes"]))
            .unwrap_err();
        assert!(e.to_string().contains("restart-strategy.type"));
    }
}
