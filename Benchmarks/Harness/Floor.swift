// Finding the floor: Benchmarks/Floor/floor.c, built here by the system C compiler.
//
// The harness builds the floor itself so that `swift run -c release mp-benchmarks` is the whole
// command: SwiftPM builds only the product it is asked to run. A C compiler's build is also the
// honest floor: it loads nothing but libc, whereas SwiftPM links even a C-only executable with
// the Swift runtime and libstdc++, and the spawned copy pays for loading them (spawn-start-join
// 2.2 ms instead of 0.6 ms on the project's VM), which is not a floor.

import Glibc

/// The C compilers tried, in order: `cc` is the system's choice; the last one is usually in
/// PATH wherever `swift` is, as the Swift toolchain ships `clang` next to it.
private let compilers = ["cc", "gcc", "clang"]

/// Where the harness keeps the floor it builds, under the package root.
private let cachedFloor = ".build/mp-floor-cc"
private let floorSource = "Benchmarks/Floor/floor.c"

/// The floor binary to run, or nil after one line on stderr that says how to get one.
///
/// 1. `.build/mp-floor-cc`, built from floor.c with `cc -O2` (else `gcc`, else `clang`) and
///    rebuilt only when floor.c is newer than it;
/// 2. an `mp-floor` next to the harness binary, for a machine without a C compiler;
/// 3. none: the floor columns stay empty.
func locateFloor(packageRoot: String?, harnessDirectory: String) -> String? {
    let notBuilt: FloorNotBuilt
    if let packageRoot {
        switch buildFloor(packageRoot: packageRoot) {
        case .success(let path): return path
        case .failure(let reason): notBuilt = reason
        }
    } else {
        notBuilt = FloorNotBuilt(reason: "\(floorSource) not found", advice: "run from the package root")
    }

    let besideHarness = harnessDirectory + "/mp-floor"
    if isExecutableFile(besideHarness) {
        let caveat =
            loadsSwiftRuntime(besideHarness)
            ? " (a SwiftPM build: it loads the Swift runtime, so its spawn-start-join is no floor)" : ""
        printError(
            "floor: \(displayed(besideHarness)), next to the harness\(caveat), as \(notBuilt.reason); \(notBuilt.advice)"
        )
        return besideHarness
    }
    printError("no floor, floor columns left empty: \(notBuilt.reason); \(notBuilt.advice)")
    return nil
}

private struct FloorNotBuilt: Error {
    var reason: String
    var advice: String
}

private func buildFloor(packageRoot: String) -> Result<String, FloorNotBuilt> {
    let source = packageRoot + "/" + floorSource
    let binary = packageRoot + "/" + cachedFloor
    guard let sourceTime = modificationTime(source) else {
        return .failure(FloorNotBuilt(reason: "\(displayed(source)) not found", advice: "run from the package root"))
    }
    if let binaryTime = modificationTime(binary), binaryTime >= sourceTime, isExecutableFile(binary) {
        printError("floor: \(displayed(binary)) (up to date with \(floorSource))")
        return .success(binary)
    }

    let available = compilers.filter { findInPath($0) != nil }
    guard !available.isEmpty else {
        return .failure(
            FloorNotBuilt(
                reason: "no C compiler in PATH (tried \(compilers.joined(separator: ", ")))",
                advice: "install one (apt-get install gcc) and run again"))
    }
    mkdir(parent(binary), 0o755)
    // Built under a name of its own, then renamed: a run in parallel, or one interrupted
    // mid-build, never finds a half-written floor.
    let partial = binary + ".partial.\(getpid())"
    let log = binary + ".log"
    for compiler in available {
        let result = runProgram([compiler, "-O2", "-o", partial, source], standardErrorPath: log)
        if result?.succeeded == true, rename(partial, binary) == 0 {
            unlink(log)
            printError("floor: built \(displayed(binary)) from \(floorSource) with \(compiler) -O2")
            return .success(binary)
        }
        unlink(partial)
    }
    return .failure(
        FloorNotBuilt(
            reason: "\(available.joined(separator: ", ")) could not build \(floorSource)",
            advice: "the errors are in \(displayed(log))"))
}

/// Whether the binary names libswiftCore among the libraries it needs: a floor SwiftPM built
/// (as it did before the harness built its own) is still in older build folders.
private func loadsSwiftRuntime(_ path: String) -> Bool {
    guard let file = fopen(path, "r") else { return false }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes += buffer[0..<count]
    }
    return bytes.firstRange(of: Array("libswiftCore.so".utf8)) != nil
}
