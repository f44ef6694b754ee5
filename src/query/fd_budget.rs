//! Fits the client caps into the process' file-descriptor limit, as Redis does with
//! `maxclients`: raise the soft limit toward the hard one, and when the caps still do not fit,
//! lower the RESP cap and say so. A cap above the limit would turn "max clients reached" into
//! failed accepts, failed RocksDB opens and failed Kafka connections.

/// Descriptors kept for everything that is not a client: each store's RocksDB files
/// (`max_open_files` per store), Kafka connections, the listeners, logs.
pub fn reserved(partitions: i32) -> u64 {
    256 * (partitions.max(0) as u64 + 1) + 128
}

/// The RESP cap to use, given the HTTP cap and what the system allows.
pub fn fit_resp_clients(resp: usize, http: usize, reserved: u64) -> usize {
    let wanted = resp as u64 + http as u64 + reserved;
    let limit = raise_nofile(wanted);
    let available = limit.saturating_sub(reserved + http as u64);
    if (resp as u64) <= available {
        return resp;
    }
    let lowered = available.max(1) as usize;
    tracing::warn!(
        requested = resp,
        lowered,
        fd_limit = limit,
        "query.resp_max_connections lowered to fit the file-descriptor limit (raise `ulimit -n`)"
    );
    lowered
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
        assert_eq!(fit_resp_clients(100, 100, 100), 100);
        // No system allows this many; the cap comes down to what is left.
        let lowered = fit_resp_clients(usize::MAX / 4, 100, 1000);
        assert!(lowered < usize::MAX / 4 && lowered >= 1);
    }
}
