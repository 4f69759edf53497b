// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "swift-multiprocessing",
    products: [
        .library(name: "Multiprocessing", targets: ["Multiprocessing"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // Atomic operations on memory shared between processes (`UnsafeAtomic(at:)`): the
        // standard library's `Atomic` cannot be placed at an address.
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        // Pool workers' log records are forwarded to the parent's logging system. 1.16.2: the
        // handlers implement `log(event:)`; the older entry point is deprecated there, and
        // implementing it instead would warn.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // The stress program's command line (mp-stress); the library does not use it.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // What Swift cannot say: the constructor that catches a child before `main`,
        // variadic fcntl/prctl, cmsg arithmetic, raw clone.
        // Links libdispatch (already loaded by every Swift program on Linux) for the main
        // queue's run-loop hooks, which serve the main actor in workers.
        .target(name: "CMultiprocessing", linkerSettings: [.linkedLibrary("dispatch")]),
        .target(
            name: "Multiprocessing",
            dependencies: [
                "CMultiprocessing",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "MultiprocessingTests",
            dependencies: ["Multiprocessing", .product(name: "Logging", package: "swift-log")]
        ),
        // Every object against every fault at seeded points, each case in a process of its
        // own (RELIABILITY.md).
        .testTarget(
            name: "FaultMatrixTests",
            dependencies: ["Multiprocessing", .product(name: "Logging", package: "swift-log")]
        ),

        // Examples: one runnable executable per scenario; Examples/tour.sh runs them all.
        .executableTarget(name: "workers", dependencies: ["Multiprocessing"], path: "Examples/workers"),
        .executableTarget(name: "error-handling", dependencies: ["Multiprocessing"], path: "Examples/error-handling"),
        .executableTarget(name: "pipes", dependencies: ["Multiprocessing"], path: "Examples/pipes"),
        .executableTarget(name: "shared-memory", dependencies: ["Multiprocessing"], path: "Examples/shared-memory"),
        .executableTarget(name: "queues", dependencies: ["Multiprocessing"], path: "Examples/queues"),
        .executableTarget(name: "pool", dependencies: ["Multiprocessing"], path: "Examples/pool"),
        .executableTarget(name: "progress", dependencies: ["Multiprocessing"], path: "Examples/progress"),

        // Benchmarks: the Swift harness. Its raw-syscall floor, Benchmarks/Floor/floor.c, is no target:
        // the harness builds it with the system C compiler, as SwiftPM would link in the Swift runtime.
        .executableTarget(name: "mp-benchmarks", dependencies: ["Multiprocessing"], path: "Benchmarks/Harness"),
        // Stress: a million pool tasks, 64 workers, 10,000 starts, a 16x16 queue; the parent's memory,
        // descriptors and children checked flat (RELIABILITY.md, "Stress").
        .executableTarget(
            name: "mp-stress",
            dependencies: ["Multiprocessing", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Stress"),
    ],
    swiftLanguageModes: [.v6]
)
