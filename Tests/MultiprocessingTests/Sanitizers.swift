import Glibc

/// The sanitizer this test binary was built with, if any, found at run time (a Swift build
/// sets no compilation condition for `--sanitize`): the sanitizer runtime is linked into the
/// executable and exports its entry points, so `dlsym` finds them only then. A test that
/// cannot run as written under a sanitizer says why next to its use of these (see
/// RELIABILITY.md, "Sanitizers").
enum Sanitizer {
    /// Built with `--sanitize=address`.
    static let address = dlsym(nil, "__asan_init") != nil
    /// Built with `--sanitize=thread`.
    static let thread = dlsym(nil, "__tsan_init") != nil
}
