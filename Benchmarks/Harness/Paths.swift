// Where things are: the package root, the harness binary, programs in PATH, file times.

import Glibc

/// The directory of the running harness binary (`/proc/self/exe`: symlinks such as
/// `.build/release` resolved).
func harnessDirectory() -> String {
    var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX))
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    return parent(String(decoding: buffer[0..<max(0, count)], as: UTF8.self))
}

func currentDirectory() -> String {
    guard let pointer = getcwd(nil, 0) else { return "." }
    defer { free(pointer) }
    return String(cString: pointer)
}

/// The package root: the current directory when the harness runs from there (as `swift run`
/// and CI run it), else the nearest directory above the harness binary that holds the
/// benchmarks, so that `.build/release/mp-benchmarks` also works from elsewhere.
func packageRoot(harnessDirectory: String) -> String? {
    let marker = "Benchmarks/Python/bench.py"
    let here = currentDirectory()
    if fileExists(here + "/" + marker) { return here }
    var directory = harnessDirectory
    while directory != "/" && !directory.isEmpty {
        directory = parent(directory)
        if fileExists(directory + "/" + marker) { return directory }
    }
    return nil
}

/// `name` as a shell would find it in `PATH`; nil if no directory there has it.
func findInPath(_ name: String) -> String? {
    guard let path = getenv("PATH") else { return nil }
    for directory in String(cString: path).split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if isExecutableFile(candidate) { return candidate }
    }
    return nil
}

func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

func isExecutableFile(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && access(path, X_OK) == 0
}

/// Nanoseconds since the epoch, or nil if there is no such file. Nanoseconds because an edit
/// made within the same second as the last build must still count as newer.
func modificationTime(_ path: String) -> Int? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec
}

func parent(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// `path` relative to the current directory when it is inside it: shorter lines on stderr.
func displayed(_ path: String) -> String {
    let prefix = currentDirectory() + "/"
    return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
}
