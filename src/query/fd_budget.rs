//! Fits the client caps into the process' file-descriptor limit, as Redis does with
//! `maxclients`: raise the soft limit toward the hard one, and when the caps still do not fit,
//! lower them and say so. A cap above the limit would turn "max clients reached" into
//! failed accepts, failed RocksDB opens and failed Kafka connections.

/// Descriptors kept for everything that is not a client: each store's RocksDB files
/// (`max_open_files` per store), Kafka connections, the listeners, logs.
pub fn reserved(partitions: i32) -> u64 {
    256 * (partitions.max(0) as u64 + 1) + 128
}

/// The (RESP, HTTP) connection caps to use, given what is configured and what the system
/// allows: unchanged when both fit, else both lowered in proportion.
pub fn fit_caps(resp: usize, http: usize, reserved: u64) -> (usize, usize) {
    let (resp, http) = (resp as u64, http as u64);
    let limit = raise_nofile(resp + http + reserved);
    let available = limit.saturating_sub(reserved).max(2);
    if resp + http <= available {
        return (resp as usize, http as usize);
    }
    let http_fit = (available * http / (resp + http)).max(1);
    let resp_fit = available.saturating_sub(http_fit).max(1);
    tracing::warn!(
        resp_requested = resp,
        http_requested = http,
        resp = resp_fit,
        http = http_fit,
        fd_limit = limit,
        "query connection caps lowered to fit the file-descriptor limit (raise `ulimit -n`)"
    );
    (resp_fit as usize, http_fit as usize)
}

/// Raises the soft `RLIMIT_NOFILE` to `wanted` (at most the hard limit); returns the limit
/// now in force.
fn raise_nofile(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        let current = limit.rlim_cur as u64;
        if current >= wanted {
            return current;
        }
        let target = wanted.min(limit.rlim_max as u64);
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            target
        } else {
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_are_kept_and_others_lowered() {
        assert_eq!(fit_caps(100, 100, 100), (100, 100));
        // No system allows this many; both caps come down to what is left.
        let (resp, http) = fit_caps(1 << 40, 1 << 38, 1000);
        assert!(resp < 1 << 40 && http < 1 << 38 && resp >= 1 && http >= 1);
        assert!(resp > http);
    }
}
