//! The rise/fall state machine of one server: consecutive results flip it, and
//! only a flip is reported, so the caller logs and stores state changes only.

/// Consecutive-result counter of one server.
#[derive(Debug, Clone)]
pub struct Counter {
    healthy: bool,
    /// Consecutive results disagreeing with `healthy`.
    streak: u32,
    rise: u32,
    fall: u32,
    /// Mandatory check not passed yet: the first pass alone turns it healthy.
    pending: bool,
}

impl Counter {
    /// Starts in `healthy`; `rise`/`fall` below 1 count as 1.
    pub fn new(healthy: bool, rise: u32, fall: u32) -> Counter {
        Counter {
            healthy,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
            pending: false,
        }
    }

    /// Starts unhealthy until the first pass (SPEC: `mandatory = true`).
    pub fn pending(rise: u32, fall: u32) -> Counter {
        Counter {
            pending: true,
            ..Counter::new(false, rise, fall)
        }
    }

    /// Current verdict.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Mandatory and not passed yet.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// Results in a row that disagree with the current verdict.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Records one check result; `Some(new verdict)` when it flips.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if self.pending {
            if !ok {
                return None;
            }
            self.pending = false;
            self.healthy = true;
            self.streak = 0;
            return Some(true);
        }
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    fn run(c: &mut Counter, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|&r| c.record(r)).collect()
    }

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        let mut c = Counter::new(true, 2, 3);
        assert_eq!(
            run(&mut c, &[false, false, true, false, false, false]),
            [None, None, None, None, None, Some(false)]
        );
        assert!(!c.healthy());
    }

    #[test]
    fn rises_after_rise_passes_in_a_row() {
        let mut c = Counter::new(false, 2, 3);
        assert_eq!(
            run(&mut c, &[true, false, true, true, true]),
            [None, None, None, Some(true), None]
        );
        assert!(c.healthy());
    }

    #[test]
    fn agreeing_result_resets_the_streak() {
        let mut c = Counter::new(true, 1, 2);
        c.record(false);
        assert_eq!(c.streak(), 1);
        c.record(true);
        assert_eq!(c.streak(), 0);
    }

    #[test]
    fn one_means_every_result_flips() {
        let mut c = Counter::new(true, 1, 1);
        assert_eq!(
            run(&mut c, &[false, true, false]),
            [Some(false), Some(true), Some(false)]
        );
        let mut z = Counter::new(true, 0, 0);
        assert_eq!(z.record(false), Some(false));
    }

    #[test]
    fn pending_needs_one_pass_then_counts_normally() {
        let mut c = Counter::pending(3, 2);
        assert!(!c.healthy());
        assert_eq!(run(&mut c, &[false, false, false]), [None, None, None]);
        assert_eq!(c.record(true), Some(true));
        assert_eq!(run(&mut c, &[false, false]), [None, Some(false)]);
        // Once passed, rise applies again.
        assert_eq!(run(&mut c, &[true, true, true]), [None, None, Some(true)]);
    }
}
