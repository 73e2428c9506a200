//! `--overhead-budget PERCENT`: per traced process, what tracing costs it next to its own CPU
//! time, and a cheaper capture while that is over the budget.
//!
//! The cost of a process is its share of what zerotrace spends beyond the hooks' own floor:
//! the kernel programs' run time (measured by the kernel when its BPF statistics are on, else
//! estimated per record) and the agent's CPU time, both split by the process's share of the
//! records read in the last second. Its CPU time comes from /proc/PID/stat. The floor that
//! `--hooks-only` measures (the tracepoint's own dispatch) is not counted: no capture mode can
//! remove it.
//!
//! Over the budget for `STEP_DOWN_AFTER` reviews in a row, a process steps down to head-only
//! capture: each read and write copies at most `HEAD_BYTES`, enough for a request line, a
//! status line and the first headers, so every request still becomes a span and the RED
//! metrics stay complete; what the heads lose (late headers, bodies' sizes) is left out, and
//! the spans say `zerotrace.capture.head_only`. Under half the budget for `STEP_UP_AFTER`
//! reviews, it steps back up.
//!
//! Heads only still make a record per read and write, and on small requests the cost is per
//! record (the ring-buffer reservation, the agent's parse and span), not per byte. Still over
//! the budget in head-only mode, a process steps down again: only one connection in N
//! (a power of two, at most `MAX_ONE_IN`) is captured, the others cost the probes a map
//! lookup per call and the agent nothing. Each span of such a process stands for N requests
//! (`zerotrace.capture.one_in`), and the RED metrics count it N times: an estimate, no longer
//! exact, which is the price of the last level. It steps up (a smaller N, then heads only for
//! all) once the cost it would have there is under half the budget for `STEP_UP_AFTER`
//! reviews.

use rustc_hash::FxHashMap as HashMap;

/// What a read or write copies in head-only mode.
pub const HEAD_BYTES: u16 = zerotrace_abi::HEAD_ONLY_CAPTURE;
/// Reviews (one a second) over the budget before stepping down: one busy second is not load.
const STEP_DOWN_AFTER: u32 = 2;
/// Reviews under half the budget before stepping back up.
const STEP_UP_AFTER: u32 = 10;
/// A process that used less CPU than this in a second is idle: it counts as under the budget.
/// Its CPU time comes in clock ticks (10 ms): a lightly loaded process shows one tick in some
/// seconds and none in others, and the cost over one tick is noise that would step it down
/// and up; what tracing costs it in absolute terms is small anyway.
const IDLE_CPU_SECONDS: f64 = 0.05;
/// Records a second under which a process with little CPU time counts as idle: at most a few
/// milliseconds of tracing, whatever its ratio to the process's time.
const QUIET_RECORDS: u64 = 1_000;
/// The granularity of a process's CPU time in /proc.
const CLOCK_TICK_SECONDS: f64 = 0.01;
/// The fewest connections sampled: one in this many.
pub const MAX_ONE_IN: u32 = 64;
/// Stepping down, the share is picked to cost this much of the budget, leaving room for the
/// load to grow.
const STEP_DOWN_TARGET: f64 = 0.75;
/// The kernel programs' cost per record when the kernel does not measure it: the average of
/// the data path's programs in docs/BENCHMARKS.md (a syscall's entry and exit programs, with
/// the copy), on the machine the figures come from.
const ESTIMATED_KERNEL_NS_PER_RECORD: f64 = 1_000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Full,
    HeadOnly,
    /// Heads only, on one connection in this many (a power of two, 2 to `MAX_ONE_IN`).
    Sampled(u32),
}

impl Step {
    /// The log line's words after the process's name.
    pub fn describe(&self) -> String {
        let cost = self.cost_percent;
        match (self.from, self.mode) {
            (_, Mode::Full) => format!("tracing has cost under half the budget for 10 s ({cost:.1}% now): full capture again"),
            (Mode::Full, Mode::HeadOnly) => {
                format!(
                    "tracing costs {cost:.1}% of its CPU time, over the budget: capturing heads only ({HEAD_BYTES} bytes a read or write) until it is under half the budget for 10 s"
                )
            }
            (_, Mode::HeadOnly) => format!("tracing costs {cost:.1}% of its CPU time, and heads on every connection would cost under half the budget: capturing them all again"),
            (from, Mode::Sampled(n)) if from.one_in() < n => format!(
                "tracing costs {cost:.1}% of its CPU time, over the budget with heads only: capturing 1 connection in {n}; each of its spans counts {n} times in the RED metrics"
            ),
            (from, Mode::Sampled(n)) => {
                format!("tracing costs {cost:.1}% of its CPU time; 1 connection in {n} would cost under half the budget (1 in {} now): capturing 1 in {n}", from.one_in())
            }
        }
    }
}

impl Mode {
    /// One connection in this many is captured (1: all).
    pub fn one_in(self) -> u32 {
        match self {
            Mode::Sampled(n) => n,
            _ => 1,
        }
    }

    pub fn head_only(self) -> bool {
        self != Mode::Full
    }

    /// The label of a step to this mode in the self-metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::HeadOnly => "head_only",
            Mode::Sampled(_) => "sampled",
        }
    }

    /// The mode whose cost fits `target` percent, from `cost` in this mode: costs scale with
    /// the connections captured (heads only; the share sampled), none below heads only for all.
    fn fitting(self, cost: f64, target: f64) -> Mode {
        let all = cost * f64::from(self.one_in());
        let n = (all / target).ceil().clamp(1.0, f64::from(MAX_ONE_IN)) as u32;
        match n.next_power_of_two() {
            1 => Mode::HeadOnly,
            n => Mode::Sampled(n),
        }
    }
}

/// A change of mode, for the log line and the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub pid: u32,
    pub mode: Mode,
    pub from: Mode,
    /// The process is gone: its settings are undone, and nothing is logged or counted.
    pub gone: bool,
    /// Tracing's cost as a percentage of the process's CPU time, in the review that decided.
    pub cost_percent: f64,
}

#[derive(Default)]
struct Process {
    records: u64,
    /// utime + stime at the last review, in seconds.
    last_cpu: Option<f64>,
    mode: Mode,
    over: u32,
    /// Reviews in a row whose cost would fit `lighter` (the mode to step up to).
    under: u32,
    lighter: Option<Mode>,
}

pub struct Budget {
    percent: f64,
    processes: HashMap<u32, Process>,
    last_agent_cpu: f64,
    last_kernel_ns: Option<u64>,
    /// Steps taken, by the mode stepped to, for the self-metrics.
    steps: HashMap<&'static str, u64>,
}

/// What one review is given: the agent's CPU time and the kernel programs' total run time so
/// far (None when the kernel does not measure it), and each process's CPU time.
pub struct Totals<'a> {
    pub agent_cpu_seconds: f64,
    pub kernel_run_ns: Option<u64>,
    pub process_cpu_seconds: &'a dyn Fn(u32) -> Option<f64>,
}

impl Budget {
    pub fn new(percent: f64) -> Budget {
        Budget { percent, processes: HashMap::default(), last_agent_cpu: 0.0, last_kernel_ns: None, steps: HashMap::default() }
    }

    /// Counts one kernel record for its process (the header's tgid).
    #[inline]
    pub fn count(&mut self, record: &[u8]) {
        if let Some(tgid) = record.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) {
            self.processes.entry(tgid).or_default().records += 1;
        }
    }

    /// Processes capturing heads only now (sampled or not).
    pub fn head_only(&self) -> usize {
        self.processes.values().filter(|p| p.mode.head_only()).count()
    }

    /// Processes capturing a sampled share of their connections now.
    pub fn sampled(&self) -> usize {
        self.processes.values().filter(|p| p.mode.one_in() > 1).count()
    }

    /// Steps taken so far, by the mode stepped to (`Mode::reason`).
    pub fn steps(&self) -> [(&'static str, u64); 3] {
        [Mode::Full, Mode::HeadOnly, Mode::Sampled(2)].map(|m| (m.reason(), self.steps.get(m.reason()).copied().unwrap_or(0)))
    }

    /// Once a second: each process's cost over the last second, and the steps it calls for.
    pub fn review(&mut self, totals: &Totals<'_>) -> Vec<Step> {
        let agent_ns = (totals.agent_cpu_seconds - self.last_agent_cpu).max(0.0) * 1e9;
        self.last_agent_cpu = totals.agent_cpu_seconds;
        let records: u64 = self.processes.values().map(|p| p.records).sum();
        let kernel_ns = match (totals.kernel_run_ns, self.last_kernel_ns) {
            (Some(now), Some(last)) => now.saturating_sub(last) as f64,
            // The first measured review has no baseline: estimate this once.
            _ => records as f64 * ESTIMATED_KERNEL_NS_PER_RECORD,
        };
        self.last_kernel_ns = totals.kernel_run_ns;
        let mut steps = Vec::new();
        let percent = self.percent;
        self.processes.retain(|&pid, p| {
            let Some(cpu) = (totals.process_cpu_seconds)(pid) else {
                // Gone: what it was set to is undone, or a process given its pid later would
                // inherit it.
                if p.mode != Mode::Full {
                    steps.push(Step { pid, mode: Mode::Full, from: p.mode, cost_percent: 0.0, gone: true });
                }
                return false;
            };
            let used = p.last_cpu.map(|last| cpu - last);
            p.last_cpu = Some(cpu);
            let (own, share) = (p.records, if records == 0 { 0.0 } else { p.records as f64 / records as f64 });
            p.records = 0;
            let Some(used) = used else { return true };
            // A quiet process costs nothing: it counts as under the budget. One with little CPU
            // time but many records is not quiet: tracing is what keeps it from running.
            let idle = used < IDLE_CPU_SECONDS && own < QUIET_RECORDS;
            let cost_percent = if idle { 0.0 } else { 100.0 * share * (agent_ns + kernel_ns) / (used.max(CLOCK_TICK_SECONDS) * 1e9) };
            // Busy without a record: sampled, its connections in the share were quiet while
            // others were not. What it would cost is unknown, not nothing.
            let measured = idle || own > 0;
            let from = p.mode;
            if let Some(mode) = p.judge(cost_percent, percent, measured) {
                steps.push(Step { pid, mode, from, cost_percent, gone: false });
            }
            true
        });
        for step in steps.iter().filter(|s| !s.gone) {
            *self.steps.entry(step.mode.reason()).or_default() += 1;
        }
        steps
    }
}

impl Process {
    /// The mode this review's cost calls for, when it changes. Down: over the budget for
    /// `STEP_DOWN_AFTER` reviews, to heads only, then to a share that fits. Up: a lighter mode
    /// whose cost would be under half the budget, for `STEP_UP_AFTER` reviews.
    fn judge(&mut self, cost_percent: f64, budget: f64, measured: bool) -> Option<Mode> {
        self.over = if cost_percent > budget { self.over + 1 } else { 0 };
        if self.over >= STEP_DOWN_AFTER {
            let down = match self.mode {
                Mode::Full => Mode::HeadOnly,
                // At least twice as few: the cost measured may lag the last step.
                m => match m.fitting(cost_percent, budget * STEP_DOWN_TARGET) {
                    Mode::Sampled(n) => Mode::Sampled(n.max(2 * m.one_in()).min(MAX_ONE_IN)),
                    _ => Mode::Sampled(2 * m.one_in()),
                },
            };
            self.over = 0;
            if down == self.mode || down.one_in() > MAX_ONE_IN {
                return None;
            }
            (self.mode, self.under, self.lighter) = (down, 0, None);
            return Some(down);
        }
        let lighter = match self.mode {
            Mode::Full => None,
            Mode::HeadOnly => (cost_percent < budget / 2.0).then_some(Mode::Full),
            m if measured => Some(m.fitting(cost_percent, budget / 2.0)).filter(|up| up.one_in() < m.one_in()),
            _ => None,
        };
        // A lighter mode each review, the least light of them once it is time.
        (self.under, self.lighter) = match (lighter, self.lighter) {
            (Some(now), Some(before)) => (self.under + 1, Some(if now.one_in() >= before.one_in() { now } else { before })),
            (Some(now), None) => (1, Some(now)),
            (None, _) => (0, None),
        };
        if self.under >= STEP_UP_AFTER
            && let Some(up) = self.lighter.take()
        {
            (self.mode, self.under) = (up, 0);
            return Some(up);
        }
        None
    }
}

/// A process's CPU time (user and system) in seconds, from /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let rest = crate::process::stat_after_name(pid)?;
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let mut fields = rest.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tgid: u32) -> Vec<u8> {
        let mut r = vec![1, 0, 1, 0];
        r.extend_from_slice(&tgid.to_le_bytes());
        r
    }

    /// Reviews `n` seconds where process 7 uses `cpu` seconds a second, makes `records` of
    /// the records, and the agent and kernel spend `cost_ns` a second.
    fn seconds(budget: &mut Budget, clock: &mut (f64, f64, u64), n: usize, cpu: f64, records: usize, cost_ns: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..n {
            for _ in 0..records {
                budget.count(&record(7));
            }
            clock.0 += cpu;
            clock.1 += cost_ns as f64 / 2e9;
            clock.2 += cost_ns / 2;
            let process_cpu = clock.0;
            let totals = Totals { agent_cpu_seconds: clock.1, kernel_run_ns: Some(clock.2), process_cpu_seconds: &move |_| Some(process_cpu) };
            steps.extend(budget.review(&totals));
        }
        steps
    }

    fn modes(steps: &[Step]) -> Vec<Mode> {
        steps.iter().map(|s| s.mode).collect()
    }

    #[test]
    fn over_budget_steps_down_to_heads_then_to_a_share_and_back_up_when_it_would_fit() {
        let mut budget = Budget::new(2.0);
        let mut clock = (0.0, 0.0, 0);
        // The first second sets the baselines.
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 0).is_empty());
        // 5% of a busy process's CPU: one second is not enough, two are.
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 50_000_000).is_empty());
        let steps = seconds(&mut budget, &mut clock, 1, 1.0, 100, 50_000_000);
        assert_eq!(steps.len(), 1);
        assert_eq!((steps[0].pid, steps[0].mode), (7, Mode::HeadOnly));
        assert!((steps[0].cost_percent - 5.0).abs() < 0.01, "{steps:?}");
        assert_eq!(budget.head_only(), 1);
        // Still 6% with heads only: a share that costs 75% of the budget, 6 / 1.5 = 4.
        let steps = seconds(&mut budget, &mut clock, 2, 1.0, 100, 60_000_000);
        assert_eq!(modes(&steps), [Mode::Sampled(4)]);
        assert_eq!((budget.head_only(), budget.sampled()), (1, 1));
        // 1.5% at one in four: within the budget, but twice as many would be 3%: it stays.
        assert!(seconds(&mut budget, &mut clock, 15, 1.0, 100, 15_000_000).is_empty());
        // 0.2%: heads on every connection would cost 0.8%, under half the budget. Ten
        // seconds of that, and it steps up to heads only; ten more under 1%, to full capture.
        let steps = seconds(&mut budget, &mut clock, 10, 1.0, 100, 2_000_000);
        assert_eq!(modes(&steps), [Mode::HeadOnly]);
        let steps = seconds(&mut budget, &mut clock, 10, 1.0, 100, 5_000_000);
        assert_eq!(modes(&steps), [Mode::Full]);
        assert_eq!(budget.steps(), [("full", 1), ("head_only", 2), ("sampled", 1)]);
        assert_eq!((budget.head_only(), budget.sampled()), (0, 0));
    }

    #[test]
    fn a_share_halves_while_still_over_and_stops_at_the_fewest() {
        let mut budget = Budget::new(1.0);
        let mut clock = (0.0, 0.0, 0);
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 0).is_empty());
        // 3% a second, whatever the mode (the cost measured lags, or the load grows).
        let steps = seconds(&mut budget, &mut clock, 20, 1.0, 100, 30_000_000);
        // Heads only; then 3 / 0.75 = 4 (75% of the budget); at one in 4, heads for all would
        // cost 12%: one in 16; then 48% of heads: one in 64, the fewest.
        assert_eq!(modes(&steps), [Mode::HeadOnly, Mode::Sampled(4), Mode::Sampled(16), Mode::Sampled(64)]);
        assert!(seconds(&mut budget, &mut clock, 10, 1.0, 100, 30_000_000).is_empty(), "nothing lighter than one in 64");
    }

    #[test]
    fn stepping_up_goes_to_the_least_light_mode_seen_in_the_quiet_seconds() {
        let mut budget = Budget::new(2.0);
        let mut clock = (0.0, 0.0, 0);
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 0).is_empty());
        let steps = seconds(&mut budget, &mut clock, 4, 1.0, 100, 200_000_000);
        assert_eq!(modes(&steps), [Mode::HeadOnly, Mode::Sampled(16)]);
        // Nine seconds that would fit heads for all (0.05% × 16 < 1%), one that would fit one
        // in two (0.1% × 16 = 1.6%): the step up is to one in two.
        let mut steps = seconds(&mut budget, &mut clock, 9, 1.0, 100, 500_000);
        steps.extend(seconds(&mut budget, &mut clock, 1, 1.0, 100, 1_000_000));
        assert_eq!(modes(&steps), [Mode::Sampled(2)]);
    }

    #[test]
    fn a_busy_sampled_process_without_records_is_not_taken_for_a_cheap_one() {
        let mut budget = Budget::new(2.0);
        let mut clock = (0.0, 0.0, 0);
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 0).is_empty());
        assert_eq!(modes(&seconds(&mut budget, &mut clock, 4, 1.0, 100, 60_000_000)), [Mode::HeadOnly, Mode::Sampled(4)]);
        // Busy, but its connections in the share are quiet: no record, no cost measured. It
        // stays; once its records say the share costs little, it steps up.
        assert!(seconds(&mut budget, &mut clock, 15, 1.0, 0, 0).is_empty());
        assert_eq!(modes(&seconds(&mut budget, &mut clock, 10, 1.0, 100, 1_000_000)), [Mode::HeadOnly]);
    }

    #[test]
    fn a_gone_process_is_set_back_to_full_capture_quietly() {
        let mut budget = Budget::new(2.0);
        let mut clock = (0.0, 0.0, 0);
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 0).is_empty());
        assert_eq!(modes(&seconds(&mut budget, &mut clock, 2, 1.0, 100, 50_000_000)), [Mode::HeadOnly]);
        let totals = Totals { agent_cpu_seconds: clock.1, kernel_run_ns: Some(clock.2), process_cpu_seconds: &|_| None };
        let steps = budget.review(&totals);
        assert_eq!(steps.iter().map(|s| (s.pid, s.mode, s.from, s.gone)).collect::<Vec<_>>(), [(7, Mode::Full, Mode::HeadOnly, true)], "its pid's bits are cleared");
        assert_eq!(budget.steps(), [("full", 0), ("head_only", 1), ("sampled", 0)], "not counted as a step");
        assert!(budget.processes.is_empty());
    }

    #[test]
    fn a_process_starved_by_its_tracing_is_not_idle() {
        let mut budget = Budget::new(2.0);
        let mut clock = (0.0, 0.0, 0);
        assert!(seconds(&mut budget, &mut clock, 1, 1.0, 100, 0).is_empty());
        // 20 ms of CPU a second, but 5,000 records: the agent's 100 ms is what holds it back.
        assert_eq!(modes(&seconds(&mut budget, &mut clock, 2, 0.02, 5_000, 100_000_000)), [Mode::HeadOnly]);
    }

    #[test]
    fn an_idle_process_counts_as_under_budget_and_a_gone_one_is_forgotten() {
        let mut budget = Budget::new(1.0);
        let mut clock = (0.0, 0.0, 0);
        // 1 ms of CPU a second: the cost ratio would be huge, but there is nothing to judge.
        assert!(seconds(&mut budget, &mut clock, 5, 0.001, 10, 10_000_000).is_empty());
        // Stepped down under load, then idle: back up after ten quiet seconds.
        assert_eq!(seconds(&mut budget, &mut clock, 2, 1.0, 100, 50_000_000).len(), 1);
        let steps = seconds(&mut budget, &mut clock, 10, 0.0, 0, 0);
        assert_eq!(steps.iter().map(|s| s.mode).collect::<Vec<_>>(), [Mode::Full]);
        budget.count(&record(8));
        let totals = Totals { agent_cpu_seconds: 0.0, kernel_run_ns: None, process_cpu_seconds: &|_| None };
        assert!(budget.review(&totals).is_empty());
        assert!(budget.processes.is_empty(), "exited processes leave");
    }

    #[test]
    fn the_cpu_time_of_this_process_is_read() {
        let cpu = process_cpu_seconds(std::process::id()).expect("this process's stat");
        assert!(cpu >= 0.0);
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }
}
