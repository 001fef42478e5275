//! Ctrl-C in `-i`: the first stops the reply being generated; one while no reply is being
//! generated (at the prompt), or a second during the same reply, ends the program.

use std::sync::atomic::{AtomicBool, Ordering};

static CANCEL: AtomicBool = AtomicBool::new(false);
static IN_REPLY: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    if IN_REPLY.load(Ordering::SeqCst) && !CANCEL.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: write and _exit are async-signal-safe; nothing else runs here.
    unsafe {
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(130);
    }
}

/// Routes SIGINT to the handler above.
pub fn install() {
    // SAFETY: the handler only touches atomics and async-signal-safe calls; a zeroed
    // sigaction is a valid starting point (empty mask, no flags).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGINT, &act, std::ptr::null_mut());
    }
}

/// Runs one reply with the flag a Ctrl-C raises.
pub fn during_reply<R>(f: impl FnOnce(&AtomicBool) -> R) -> R {
    CANCEL.store(false, Ordering::SeqCst);
    IN_REPLY.store(true, Ordering::SeqCst);
    let r = f(&CANCEL);
    IN_REPLY.store(false, Ordering::SeqCst);
    r
}
