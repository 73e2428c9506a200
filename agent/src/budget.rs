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

use rustc_hash::FxHashMap as HashMap;

/// What a read or write copies in head-only mode.
pub const HEAD_BYTES: u16 = zerotrace_abi::HEAD_ONLY_CAPTURE;
/// Reviews (one a second) over the budget before stepping down: one busy second is not load.
const STEP_DOWN_AFTER: u32 = 2;
/// Reviews under half the budget before stepping back up.
const STEP_UP_AFTER: u32 = 10;
/// A process that used less CPU than this in a second is idle: its cost ratio means nothing,
/// and it counts as under the budget.
const IDLE_CPU_SECONDS: f64 = 0.01;
/// The kernel programs' cost per record when the kernel does not measure it: the average of
/// the data path's programs in docs/BENCHMARKS.md (a syscall's entry and exit programs, with
/// the copy), on the machine the figures come from.
const ESTIMATED_KERNEL_NS_PER_RECORD: f64 = 1_000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    HeadOnly,
}

/// A change of mode, for the log line and the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub pid: u32,
    pub mode: Mode,
    /// Tracing's cost as a percentage of the process's CPU time, in the review that decided.
    pub cost_percent: f64,
}

#[derive(Default)]
struct Process {
    records: u64,
    /// utime + stime at the last review, in seconds.
    last_cpu: Option<f64>,
    head_only: bool,
    over: u32,
    under: u32,
}

pub struct Budget {
    percent: f64,
    processes: HashMap<u32, Process>,
    last_agent_cpu: f64,
    last_kernel_ns: Option<u64>,
    /// Steps taken, down and up, for the self-metrics.
    pub steps_down: u64,
    pub steps_up: u64,
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
        Budget { percent, processes: HashMap::default(), last_agent_cpu: 0.0, last_kernel_ns: None, steps_down: 0, steps_up: 0 }
    }

    /// Counts one kernel record for its process (the header's tgid).
    #[inline]
    pub fn count(&mut self, record: &[u8]) {
        if let Some(tgid) = record.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) {
            self.processes.entry(tgid).or_default().records += 1;
        }
    }

    /// Processes in head-only mode now.
    pub fn head_only(&self) -> usize {
        self.processes.values().filter(|p| p.head_only).count()
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
            let Some(cpu) = (totals.process_cpu_seconds)(pid) else { return false };
            let used = p.last_cpu.map(|last| cpu - last);
            p.last_cpu = Some(cpu);
            let share = if records == 0 { 0.0 } else { p.records as f64 / records as f64 };
            p.records = 0;
            let Some(used) = used else { return true };
            // An idle process costs nothing: it counts as under the budget.
            let cost_percent = if used < IDLE_CPU_SECONDS { 0.0 } else { 100.0 * share * (agent_ns + kernel_ns) / (used * 1e9) };
            if let Some(mode) = p.judge(cost_percent, percent) {
                steps.push(Step { pid, mode, cost_percent });
            }
            true
        });
        for step in &steps {
            match step.mode {
                Mode::HeadOnly => self.steps_down += 1,
                Mode::Full => self.steps_up += 1,
            }
        }
        steps
    }
}

impl Process {
    /// The mode this review's cost calls for, when it changes.
    fn judge(&mut self, cost_percent: f64, budget: f64) -> Option<Mode> {
        if self.head_only {
            self.under = if cost_percent < budget / 2.0 { self.under + 1 } else { 0 };
            if self.under >= STEP_UP_AFTER {
                (self.head_only, self.under) = (false, 0);
                return Some(Mode::Full);
            }
        } else {
            self.over = if cost_percent > budget { self.over + 1 } else { 0 };
            if self.over >= STEP_DOWN_AFTER {
                (self.head_only, self.over) = (true, 0);
                return Some(Mode::HeadOnly);
            }
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

    #[test]
    fn over_budget_steps_down_after_two_seconds_and_back_up_after_ten_quiet_ones() {
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
        // Still over in head-only mode: nothing more to do.
        assert!(seconds(&mut budget, &mut clock, 5, 1.0, 100, 30_000_000).is_empty());
        // Under half the budget (0.5%) for ten seconds: back to full capture.
        let steps = seconds(&mut budget, &mut clock, 10, 1.0, 100, 5_000_000);
        assert_eq!(steps.iter().map(|s| s.mode).collect::<Vec<_>>(), [Mode::Full]);
        assert_eq!((budget.steps_down, budget.steps_up, budget.head_only()), (1, 1, 0));
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
