// swift-tools-version: 6.0
import PackageDescription

// libFuzzer targets for the wire decoders: a package of its own, so that the root package
// builds exactly as before (no sanitizer flags, no fuzzing entry points in its products).
// Built and run by Scripts/fuzz.sh:
//
//     swift build -c release -Xswiftc -sanitize=fuzzer,address
//
// Each executable's main.swift hands its test function to libFuzzer's driver.
let package = Package(
    name: "multiprocessing-fuzz",
    dependencies: [.package(name: "swift-multiprocessing", path: "..")],
    targets: [
        // libFuzzer's driver entry point, declared for Swift.
        .target(name: "CFuzzDriver"),
        // The values the targets decode and the seed corpus is encoded from.
        .target(
            name: "FuzzTypes",
            dependencies: [.product(name: "Multiprocessing", package: "swift-multiprocessing")]
        ),
        .executableTarget(
            name: "fuzz-frame",
            dependencies: [
                "FuzzTypes", "CFuzzDriver", .product(name: "Multiprocessing", package: "swift-multiprocessing"),
            ]
        ),
        .executableTarget(
            name: "fuzz-binary-decoder",
            dependencies: [
                "FuzzTypes", "CFuzzDriver", .product(name: "Multiprocessing", package: "swift-multiprocessing"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
