//! What every eBPF object of this crate needs: a panic handler (never reached: the verifier
//! rejects programs that could panic) and the license section (GPL-compatible helpers).

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
