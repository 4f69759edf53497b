// swift-tools-version: 6.0
import PackageDescription

// A scratch measurement for MPI/SCALING.md: what the library's binary wire costs per item to
// encode and decode a reply's outcomes as one enum per item (as MPIPool's replies carry
// them) against a plain array of the outputs. Depends on the root package only.
//
//     cd MPI/Benchmarks/DecodeCost && swift build -c release && .build/release/decode-cost
let package = Package(
    name: "decode-cost",
    dependencies: [.package(name: "swift-multiprocessing", path: "../../..")],
    targets: [
        .executableTarget(
            name: "decode-cost",
            dependencies: [.product(name: "Multiprocessing", package: "swift-multiprocessing")])
    ],
    swiftLanguageModes: [.v6]
)
