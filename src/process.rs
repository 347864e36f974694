//! The figures of this process the `process_*` metric families expose
//! (`metrics::process`), read from `/proc/self` at each scrape.
//!
//! The parsers are pure (text in, numbers out); [`read`] does the I/O.

/// The fields of `/proc/<pid>/stat` the families use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time after boot, in clock ticks.
    pub starttime: u64,
    /// Virtual memory size, in bytes.
    pub vsize: u64,
    /// Resident set size, in pages.
    pub rss: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so the fields are counted from
/// the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or("no ')' closing the command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize, name: &str| -> Result<u64, String> {
        let v = fields
            .get(n - 3)
            .ok_or_else(|| format!("no field {n} ({name})"))?;
        v.parse()
            .map_err(|_| format!("field {n} ({name}) is not a number: {v:?}"))
    };
    Ok(Stat {
        utime: field(14, "utime")?,
        stime: field(15, "stime")?,
        starttime: field(22, "starttime")?,
        vsize: field(23, "vsize")?,
        rss: field(24, "rss")?,
    })
}

/// The soft limits of `/proc/<pid>/limits` the families use; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub open_files: Option<u64>,
    pub address_space: Option<u64>,
}

/// Parses `/proc/<pid>/limits`: a header, then one line per limit with the name,
/// the soft and hard limits (a number or `unlimited`) and the unit.
pub fn parse_limits(text: &str) -> Result<Limits, String> {
    let soft = |name: &str| -> Result<Option<u64>, String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name:?} line"))?;
        let value = line[name.len()..]
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("{name:?} has no value"))?;
        match value {
            "unlimited" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name:?} soft limit is not a number: {v:?}")),
        }
    };
    Ok(Limits {
        open_files: soft("Max open files")?,
        address_space: soft("Max address space")?,
    })
}

/// The boot time (Unix seconds) from the `btime` line of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Result<u64, String> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or("no btime line")?
        .trim()
        .parse()
        .map_err(|_| "btime is not a number".into())
}

/// One reading of the process's figures, in the units of the metric families.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// -1 when unlimited, as client_golang exports it.
    pub max_fds: f64,
    pub virtual_memory_bytes: u64,
    /// -1 when unlimited.
    pub virtual_memory_max_bytes: f64,
    pub resident_memory_bytes: u64,
    pub start_time_seconds: f64,
}

impl Sample {
    /// Combines the parsed files; `clock_ticks` is `sysconf(_SC_CLK_TCK)`,
    /// `page_size` is `sysconf(_SC_PAGESIZE)`.
    pub fn new(
        stat: &Stat,
        limits: &Limits,
        boot_time: u64,
        open_fds: u64,
        clock_ticks: u64,
        page_size: u64,
    ) -> Sample {
        let ticks = clock_ticks.max(1) as f64;
        let limit = |l: Option<u64>| l.map_or(-1.0, |v| v as f64);
        Sample {
            cpu_seconds: (stat.utime.saturating_add(stat.stime)) as f64 / ticks,
            open_fds,
            max_fds: limit(limits.open_files),
            virtual_memory_bytes: stat.vsize,
            virtual_memory_max_bytes: limit(limits.address_space),
            resident_memory_bytes: stat.rss.saturating_mul(page_size),
            start_time_seconds: boot_time as f64 + stat.starttime as f64 / ticks,
        }
    }
}

/// Reads this process's figures from `/proc`.
#[cfg(target_os = "linux")]
pub fn read() -> Result<Sample, String> {
    let file = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let stat =
        parse_stat(&file("/proc/self/stat")?).map_err(|e| format!("/proc/self/stat: {e}"))?;
    let limits =
        parse_limits(&file("/proc/self/limits")?).map_err(|e| format!("/proc/self/limits: {e}"))?;
    let boot_time =
        parse_boot_time(&file("/proc/stat")?).map_err(|e| format!("/proc/stat: {e}"))?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("/proc/self/fd: {e}"))?
        .count() as u64;
    // SAFETY: sysconf only reads a system constant.
    let (clock_ticks, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if clock_ticks <= 0 || page_size <= 0 {
        return Err("sysconf gave no clock tick rate or page size".into());
    }
    Ok(Sample::new(
        &stat,
        &limits,
        boot_time,
        // read_dir's own descriptor was open while the directory was read.
        open_fds.saturating_sub(1),
        clock_ticks as u64,
        page_size as u64,
    ))
}

/// Only Linux has `/proc/self` in this shape.
#[cfg(not(target_os = "linux"))]
pub fn read() -> Result<Sample, String> {
    Err("process metrics are read from /proc, which only Linux has".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAT: &str = "12345 (imagecap-export) S 1 12345 12345 0 -1 4194560 2661 0 0 0 \
        150 37 0 0 20 0 6 0 987654 123457536 4242 18446744073709551615 1 1 0 0 0 0 0 \
        4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             63707                63707                processes 
Max open files            1048576              1048576              files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
";

    #[test]
    fn parses_a_stat_line() {
        assert_eq!(
            parse_stat(STAT).unwrap(),
            Stat {
                utime: 150,
                stime: 37,
                starttime: 987654,
                vsize: 123457536,
                rss: 4242,
            }
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses() {
        let line = STAT.replace("(imagecap-export)", "(a) b (c) ) d)");
        assert_eq!(parse_stat(&line).unwrap().rss, 4242);
    }

    #[test]
    fn bad_stat_lines_are_errors() {
        for bad in ["", "1 (x", "1 (x) S 1 2", &STAT.replace(" 150 ", " -150 ")] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_limits() {
        assert_eq!(
            parse_limits(LIMITS).unwrap(),
            Limits {
                open_files: Some(1_048_576),
                address_space: None,
            }
        );
        let limited = LIMITS.replace(
            "Max address space         unlimited",
            "Max address space         4294967296",
        );
        assert_eq!(
            parse_limits(&limited).unwrap().address_space,
            Some(4_294_967_296)
        );
        assert!(parse_limits("Limit Soft Limit\n").is_err());
        assert!(parse_limits(&LIMITS.replace("1048576              1048576", "lots x")).is_err());
    }

    #[test]
    fn parses_boot_time() {
        let text = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1700000000\nprocesses 4\n";
        assert_eq!(parse_boot_time(text), Ok(1_700_000_000));
        assert!(parse_boot_time("cpu 1\n").is_err());
        assert!(parse_boot_time("btime soon\n").is_err());
    }

    /// The reading of [`STAT`] and [`LIMITS`].
    pub(crate) fn sample() -> Sample {
        Sample::new(
            &parse_stat(STAT).unwrap(),
            &parse_limits(LIMITS).unwrap(),
            1_700_000_000,
            9,
            100,
            4096,
        )
    }

    #[test]
    fn sample_in_metric_units() {
        let s = sample();
        assert_eq!(s.cpu_seconds, 1.87);
        assert_eq!(s.resident_memory_bytes, 4242 * 4096);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 9876.54);
        assert_eq!(s.max_fds, 1_048_576.0);
        assert_eq!(s.virtual_memory_max_bytes, -1.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read().unwrap();
        assert!(s.resident_memory_bytes > 0);
        assert!(s.open_fds >= 3, "stdin, stdout, stderr at least: {s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0);
    }

    proptest! {
        #[test]
        fn any_command_name_parses(comm in "[ -~]{0,32}", utime in any::<u64>(), rss in any::<u64>()) {
            let line = format!(
                "7 ({comm}) R 1 7 7 0 -1 0 0 0 0 0 {utime} 2 0 0 20 0 1 0 33 4096 {rss} 0 0\n"
            );
            let stat = parse_stat(&line).unwrap();
            prop_assert_eq!(stat.utime, utime);
            prop_assert_eq!(stat.stime, 2);
            prop_assert_eq!(stat.starttime, 33);
            prop_assert_eq!(stat.vsize, 4096);
            prop_assert_eq!(stat.rss, rss);
        }

        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_stat(&text);
            let _ = parse_limits(&text);
            let _ = parse_boot_time(&text);
        }
    }
}
