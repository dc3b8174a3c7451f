//! Where CPU work runs, and which calls may split themselves across the worker pool.
//!
//! Every kernel splits its work with rayon. Called from a thread outside the pool, each parallel
//! section is a cold hand-off: the job is queued, a sleeping worker is woken, and the caller sleeps
//! until it is woken in turn, tens of microseconds each way on a virtual machine. A training step
//! of the ChestMNIST MLP is a few hundred short sections, and those hand-offs were a fifth of its
//! time. [`run_on_pool`] runs a whole step (or forward pass) on a worker instead, as the *driver*:
//! its sections follow one another while the other workers are still awake, and hand-offs become
//! work stealing.
//!
//! A GEMM asked for from inside a parallel task (a convolution's pixel block) must not split
//! again: its caller is already one of several tasks. A worker is inside such a task unless it is
//! the driver at the top of its step, and the driver itself runs tasks of its own sections while
//! it waits for them, so those tasks are marked with [`task`].

use std::cell::Cell;

/// What the current thread is doing, as far as splitting work goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// Not running a driver's step: a caller outside the pool, or a worker running whatever
    /// it was handed.
    Unmarked,
    /// Running a step through [`run_on_pool`], between parallel sections.
    Driver,
    /// Running one task of a parallel section ([`task`]).
    Task,
}

thread_local! {
    static ROLE: Cell<Role> = const { Cell::new(Role::Unmarked) };
}

/// Sets this thread's role until dropped.
struct RoleGuard {
    previous: Role,
}

impl RoleGuard {
    fn enter(role: Role) -> RoleGuard {
        RoleGuard { previous: ROLE.with(|r| r.replace(role)) }
    }
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        ROLE.with(|r| r.set(self.previous));
    }
}

/// Runs `f` on a worker of the pool as the driver of its parallel sections, and returns its
/// result. The calling thread's grad mode (recording or `no_grad`) and random-init mode carry
/// over to `f`, since both are per thread. Already on a worker, `f` runs right there.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let grad = crate::autograd::is_grad_enabled();
    let skip_init = crate::tensor::init::skipping_random_init();
    let body = move || {
        let _role = RoleGuard::enter(Role::Driver);
        let _grad = crate::autograd::set_grad_enabled(grad);
        let _init = skip_init.then(crate::tensor::init::skip_random_init);
        f()
    };
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() <= 1 {
        body()
    } else {
        rayon::scope(|_| body())
    }
}

/// Runs `f` as one task of a parallel section: products it asks for run on this thread.
pub fn task<R>(f: impl FnOnce() -> R) -> R {
    let _role = RoleGuard::enter(Role::Task);
    f()
}

/// True when a kernel called here may split its work across the pool: the caller is the driver,
/// or a thread outside the pool; not a worker inside some parallel task.
pub fn may_split() -> bool {
    match ROLE.with(|r| r.get()) {
        Role::Driver => true,
        Role::Task => false,
        Role::Unmarked => rayon::current_thread_index().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_may_split_but_its_tasks_may_not() {
        assert!(may_split(), "a caller outside the pool splits");
        run_on_pool(|| {
            assert!(may_split(), "the driver splits");
            task(|| assert!(!may_split(), "a task of the driver's section does not"));
            assert!(may_split(), "the role is restored after the task");
        });
        rayon::scope(|_| assert!(!may_split(), "an unmarked worker task does not split"));
    }

    #[test]
    fn grad_mode_carries_over_to_the_driver() {
        let _off = crate::autograd::no_grad();
        assert!(!run_on_pool(crate::autograd::is_grad_enabled));
        let _on = crate::autograd::set_grad_enabled(true);
        assert!(run_on_pool(crate::autograd::is_grad_enabled));
    }
}
