//! Password hashing (argon2id) on a small pool of threads of its own, with working memory that
//! goes back to the system.
//!
//! A hash is the most expensive thing a stranger can make the server do: argon2id's default
//! parameters (m = 19 MiB, t = 2) cost 19 MiB of memory and tens of milliseconds of a core, on
//! purpose. Run on tokio's blocking pool, 120 concurrent logins for unknown ids made 115 threads
//! and left 3.8 GB in glibc's per-thread arenas. Here:
//! - at most `workers` hashes run at once and at most `queue` wait, and at most `per_second` are
//!   started a second (in bursts of twice that); a job beyond any of these is refused at once with
//!   [`HashError::Busy`], so the HTTP layer answers `429` with `Retry-After` instead of letting work
//!   pile up. The rate matters as much as the bound: a hash is memory-hard on purpose, and one
//!   thread hashing flat out cost honest call setups a quarter of their rate on a 2-core machine
//!   (the soak, docs/BENCHMARKS.md), through the caches as much as the CPU;
//! - logins from a source where that account signed in before wait in a lane of their own
//!   ([`Lane::Known`]), with its own places, served first and outside the rate: strangers flooding
//!   the pool from many addresses fill the other lane, and the owner still gets in;
//! - each worker maps its 19 MiB with `mmap` when work arrives and unmaps it after
//!   [`IDLE_RELEASE`] without work of its own, so memory returns to the system instead of staying
//!   in the allocator (a plain `Vec` of that size raises glibc's mmap threshold and is kept after
//!   free); with at most two workers, hashing never holds more than 38 MiB;
//! - the workers run at a lowest scheduling priority (nice 19), so under contention hashing yields
//!   the CPU to signaling: a login flood slows logins, not call setups;
//! - the PHC strings are the same as the `argon2` crate's own, so stored hashes from either verify
//!   with either.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;
use tracing::warn;

use crate::clock::Clock;

/// How long a worker keeps its working memory mapped without work.
pub const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// Blocks of working memory a hash with the default parameters needs (1 KiB each).
pub const DEFAULT_BLOCKS: usize = Params::DEFAULT_M_COST as usize;

/// Length of the hash output, as the `argon2` crate makes it.
const OUTPUT_LEN: usize = 32;

/// A hash to verify against when an account does not exist, so a wrong user id costs the same
/// time as a wrong password and ids cannot be probed by timing. Its password is irrelevant; it
/// has the default parameters (a unit test checks), so it costs what a real hash costs.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lzYWx0ZGVjb3lzYWx0$3Vr8J7a3e5Ls3C1HS9B5GHkxBx9z6w5VZ1jKXbFcmWQ";

/// Why a hash could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every worker is busy and the queue is full: try again shortly.
    #[error("password hashing is busy")]
    Busy,
    /// The pool has stopped (the server is shutting down).
    #[error("password hashing has stopped")]
    Stopped,
    /// The working memory could not be mapped, or argon2 refused its inputs.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

enum Job {
    Hash { password: String, reply: oneshot::Sender<Result<String, HashError>> },
    Verify { hash: Option<String>, password: String, reply: oneshot::Sender<Result<bool, HashError>> },
}

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A login for an account from a source it signed in from before: served first.
    Known,
    /// Everything else.
    Other,
}

/// The jobs waiting for a worker, shared by the pool and its workers.
struct Inbox {
    state: Mutex<InboxState>,
    /// Signalled when a job arrives or the pool is dropped.
    arrived: Condvar,
}

struct InboxState {
    known: VecDeque<Job>,
    waiting: VecDeque<Job>,
    /// Places in each lane.
    capacity: usize,
    /// Starts allowed to [`Lane::Other`].
    budget: HashBudget,
    open: bool,
}

/// A token bucket of hashes: `per_second`, in bursts of up to twice that. Time (Unix ms, from
/// the server's [`Clock`]) is passed in, so it is tested without waiting, and a test server on a
/// manual clock refuses exactly what the budget says however fast the machine hashes.
#[derive(Debug, Clone, Copy)]
struct HashBudget {
    per_second: f64,
    tokens: f64,
    at_ms: i64,
}

impl HashBudget {
    fn new(per_second: u32, now_ms: i64) -> HashBudget {
        let per_second = f64::from(per_second.max(1));
        HashBudget { per_second, tokens: 2.0 * per_second, at_ms: now_ms }
    }

    /// Takes one hash at `now_ms`, if there is one.
    fn take(&mut self, now_ms: i64) -> bool {
        // A clock stepped back (NTP) gives nothing and takes nothing.
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.per_second).min(2.0 * self.per_second);
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The pool. Dropping it lets the workers finish the jobs already queued and exit.
pub struct HashPool {
    inbox: Arc<Inbox>,
    clock: Arc<dyn Clock>,
}

impl HashPool {
    /// A pool of `workers` threads (at least one) with room for `queue` waiting jobs in each lane,
    /// starting at most `per_second` hashes a second of `clock` outside the known lane.
    pub fn new(workers: usize, queue: usize, per_second: u32, clock: Arc<dyn Clock>) -> std::io::Result<HashPool> {
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState {
                known: VecDeque::new(),
                waiting: VecDeque::new(),
                capacity: queue,
                budget: HashBudget::new(per_second, clock.now_ms()),
                open: true,
            }),
            arrived: Condvar::new(),
        });
        for n in 0..workers.max(1) {
            let inbox = Arc::clone(&inbox);
            std::thread::Builder::new().name(format!("hark-hash-{n}")).spawn(move || work(&inbox))?;
        }
        Ok(HashPool { inbox, clock })
    }

    /// Workers for this machine: half its cores, at least one and at most two, so that a login
    /// flood can take at most half the CPU from the calls, and the hashing memory stays under
    /// 40 MiB however large the machine.
    pub fn default_workers() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).clamp(1, 2)
    }

    /// An argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply }, Lane::Other)?;
        answer.await.map_err(|_| HashError::Stopped)?
    }

    /// Whether `password` matches `hash`; with no hash (no such account) it checks against a
    /// decoy of the same cost and answers false.
    pub async fn verify(&self, hash: Option<String>, password: String, lane: Lane) -> Result<bool, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify { hash, password, reply }, lane)?;
        answer.await.map_err(|_| HashError::Stopped)?
    }

    fn submit(&self, job: Job, lane: Lane) -> Result<(), HashError> {
        let now_ms = self.clock.now_ms();
        let mut guard = self.inbox.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = &mut *guard;
        let queue = match lane {
            Lane::Known => &mut state.known,
            Lane::Other => &mut state.waiting,
        };
        if queue.len() >= state.capacity || (lane == Lane::Other && !state.budget.take(now_ms)) {
            return Err(HashError::Busy);
        }
        queue.push_back(job);
        drop(guard);
        self.inbox.arrived.notify_one();
        Ok(())
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.inbox.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).open = false;
        self.inbox.arrived.notify_all();
    }
}

/// What a worker's wait for work ended with.
enum Next {
    Job(Job),
    /// Nothing came for [`IDLE_RELEASE`].
    Idle,
    /// The pool is gone and nothing is left to do.
    Closed,
}

impl Inbox {
    /// The next job; while `holding_memory`, gives up after [`IDLE_RELEASE`] so the caller can
    /// let its memory go. Each worker waits with its own deadline.
    fn next(&self, holding_memory: bool) -> Next {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let deadline = std::time::Instant::now() + IDLE_RELEASE;
        loop {
            if let Some(job) = state.known.pop_front().or_else(|| state.waiting.pop_front()) {
                return Next::Job(job);
            }
            if !state.open {
                return Next::Closed;
            }
            if !holding_memory {
                state = self.arrived.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Next::Idle;
            }
            state = self.arrived.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
    }
}

/// Niceness of the hashing threads: CFS gives a nice-19 thread about 1.5 % of the CPU a nice-0
/// thread gets when both want it, and all of it when nothing else does (the soak measured honest
/// call setups under a login flood at 0.67x of calm with nice 10).
const WORKER_NICENESS: libc::c_int = 19;

/// One worker: takes jobs until the pool is dropped, holding working memory only while busy.
fn work(inbox: &Inbox) {
    // SAFETY: gettid and setpriority only read their arguments; on Linux, PRIO_PROCESS with a
    // thread id sets that thread's niceness alone.
    let lowered = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICENESS)
    };
    if lowered != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot lower the priority of password hashing");
    }
    let mut memory: Option<ArgonMemory> = None;
    loop {
        let job = match inbox.next(memory.is_some()) {
            Next::Job(job) => job,
            Next::Idle => {
                memory = None;
                continue;
            }
            Next::Closed => return,
        };
        if memory.is_none() {
            match ArgonMemory::new(DEFAULT_BLOCKS) {
                Ok(mapped) => memory = Some(mapped),
                Err(e) => {
                    warn!(error = %e, "cannot map memory for password hashing");
                    fail(job, HashError::Failed(e.to_string()));
                    continue;
                }
            }
        }
        let memory = memory.as_mut().expect("mapped above");
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hash_password(&password, memory).map_err(|e| HashError::Failed(e.to_string())));
            }
            Job::Verify { hash, password, reply } => {
                let matches = verify_password(hash.as_deref().unwrap_or(DECOY_HASH), &password, memory);
                let _ = reply.send(Ok(matches && hash.is_some()));
            }
        }
    }
}

fn fail(job: Job, error: HashError) {
    match job {
        Job::Hash { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Job::Verify { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}

/// An argon2id hash (PHC string) of `password` with the default parameters, computed in `memory`.
pub fn hash_password(password: &str, memory: &mut ArgonMemory) -> Result<String, argon2::password_hash::Error> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes)?;
    let mut out = [0u8; OUTPUT_LEN];
    let blocks = memory.blocks(params.block_count()).ok_or(argon2::password_hash::Error::ParamValueInvalid(
        argon2::password_hash::errors::InvalidValue::TooLong,
    ))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, blocks)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash`, computed in `memory`. A hash whose
/// parameters need more memory than `memory` holds, or that is not argon2, never matches.
pub fn verify_password(hash: &str, password: &str, memory: &mut ArgonMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let Some(blocks) = memory.blocks(params.block_count()) else {
        warn!(m_cost = params.m_cost(), "a stored password hash needs more memory than the server grants");
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if Argon2::new(algorithm, version, params).hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, blocks).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// argon2's working memory in an anonymous mapping of its own, unmapped on drop.
pub struct ArgonMemory {
    start: std::ptr::NonNull<Block>,
    blocks: usize,
}

// SAFETY: the mapping is owned by this value alone (no other pointer to it exists), so moving it
// to another thread moves sole ownership.
unsafe impl Send for ArgonMemory {}

impl ArgonMemory {
    /// Maps room for `blocks` argon2 blocks (1 KiB each).
    pub fn new(blocks: usize) -> std::io::Result<ArgonMemory> {
        let len = blocks.max(1) * Block::SIZE;
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory;
        // the result is checked for MAP_FAILED before use.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = std::ptr::NonNull::new(address.cast::<Block>()).ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(ArgonMemory { start, blocks: blocks.max(1) })
    }

    /// The first `count` blocks, if there are that many.
    fn blocks(&mut self, count: usize) -> Option<&mut [Block]> {
        if count > self.blocks {
            return None;
        }
        // SAFETY: the mapping holds `self.blocks` blocks and lives as long as `self`; anonymous
        // pages start zeroed, and all-zero bytes are a valid `Block` (an array of u64); pages are
        // 4 KiB aligned, more than `Block`'s 64-byte alignment; `&mut self` makes this the only
        // reference for its lifetime.
        Some(unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), count) })
    }
}

impl Drop for ArgonMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing references any more.
        unsafe {
            libc::munmap(self.start.as_ptr().cast(), self.blocks * Block::SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher;

    fn memory() -> ArgonMemory {
        ArgonMemory::new(DEFAULT_BLOCKS).unwrap()
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let mut memory = memory();
        let hash = hash_password("correct horse", &mut memory).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password(&hash, "correct horse", &mut memory));
        assert!(!verify_password(&hash, "wrong horse", &mut memory));
        assert!(!verify_password("not a hash", "x", &mut memory));
    }

    #[test]
    fn the_crates_own_hashes_verify_here_and_ours_there() {
        use argon2::PasswordVerifier;
        let mut memory = memory();
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(verify_password(&theirs, "correct horse", &mut memory));
        let ours = hash_password("correct horse", &mut memory).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
    }

    #[test]
    fn a_hash_needing_more_memory_than_granted_never_matches() {
        let mut small = ArgonMemory::new(1024).unwrap();
        let hash = hash_password("correct horse", &mut memory()).unwrap();
        assert!(!verify_password(&hash, "correct horse", &mut small));
    }

    #[test]
    fn the_decoy_costs_what_a_real_hash_costs() {
        let parsed = PasswordHash::new(DECOY_HASH).unwrap();
        assert_eq!(Algorithm::try_from(parsed.algorithm).unwrap(), Algorithm::Argon2id);
        let (params, default) = (Params::try_from(&parsed).unwrap(), Params::default());
        assert_eq!((params.m_cost(), params.t_cost(), params.p_cost()), (default.m_cost(), default.t_cost(), default.p_cost()));
        assert_eq!(parsed.hash.unwrap().len(), OUTPUT_LEN);
    }

    #[tokio::test]
    async fn the_pool_refuses_beyond_its_queue_and_answers_the_rest() {
        let pool = HashPool::new(1, 2, 1000, crate::clock::ManualClock::new(1_700_000_000_000)).unwrap();
        // Ten at once, without waiting: one runs, two wait, and the worker can take at most one
        // more off the queue in the microseconds this loop takes (a hash takes many milliseconds).
        let mut answers = Vec::new();
        let mut refused = 0;
        for _ in 0..10 {
            let (reply, answer) = oneshot::channel();
            match pool.submit(Job::Hash { password: "correct horse".into(), reply }, Lane::Other) {
                Ok(()) => answers.push(answer),
                Err(HashError::Busy) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!((2..=4).contains(&answers.len()), "{} accepted", answers.len());
        assert_eq!(refused, 10 - answers.len());
        for answer in answers {
            let hash = answer.await.unwrap().unwrap();
            assert!(pool.verify(Some(hash), "correct horse".into(), Lane::Other).await.unwrap());
        }
        assert!(!pool.verify(None, "correct horse".into(), Lane::Other).await.unwrap(), "no account never matches");
    }

    #[test]
    fn the_budget_allows_a_burst_then_the_rate() {
        let start = 1_700_000_000_000;
        let mut budget = HashBudget::new(5, start);
        assert_eq!((0..12).filter(|_| budget.take(start)).count(), 10, "a burst of two seconds' worth");
        let later = start + 400;
        assert_eq!((0..5).filter(|_| budget.take(later)).count(), 2, "then five a second");
        assert_eq!((0..5).filter(|_| budget.take(start)).count(), 0, "a clock stepped back gives nothing");
        let much_later = start + 60_000;
        assert_eq!((0..30).filter(|_| budget.take(much_later)).count(), 10, "never more than the burst");
    }

    #[tokio::test]
    async fn beyond_the_rate_strangers_wait_and_known_logins_do_not() {
        let pool = HashPool::new(1, 100, 1, crate::clock::ManualClock::new(1_700_000_000_000)).unwrap();
        assert!(pool.hash("a".into()).await.is_ok() && pool.hash("b".into()).await.is_ok());
        assert!(matches!(pool.hash("c".into()).await, Err(HashError::Busy)), "two in a burst at one a second");
        let owner_hash = hash_password("correct horse", &mut memory()).unwrap();
        assert!(pool.verify(Some(owner_hash), "correct horse".into(), Lane::Known).await.unwrap());
    }

    #[tokio::test]
    async fn known_logins_have_places_of_their_own_and_go_first() {
        let pool = HashPool::new(1, 2, 1000, crate::clock::ManualClock::new(1_700_000_000_000)).unwrap();
        let owner_hash = hash_password("correct horse", &mut memory()).unwrap();
        // Strangers fill the pool: one running, two waiting, the rest refused.
        let mut strangers = Vec::new();
        while strangers.len() < 10 {
            let (reply, answer) = oneshot::channel();
            if pool.submit(Job::Hash { password: "x".into(), reply }, Lane::Other).is_err() {
                break;
            }
            strangers.push(answer);
        }
        assert!(matches!(pool.hash("x".into()).await, Err(HashError::Busy)));
        // The owner still gets a place, and is served before the strangers who wait.
        let (reply, owner) = oneshot::channel();
        pool.submit(Job::Verify { hash: Some(owner_hash), password: "correct horse".into(), reply }, Lane::Known).unwrap();
        let mut owner = std::pin::pin!(owner);
        let mut finished_before_owner = 0;
        for stranger in strangers {
            tokio::select! {
                biased;
                answer = &mut owner => {
                    assert!(answer.unwrap().unwrap());
                    break;
                }
                _ = stranger => finished_before_owner += 1,
            }
        }
        assert!(finished_before_owner <= 1, "only the hash already running may finish first, {finished_before_owner} did");
    }
}
