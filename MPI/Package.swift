// swift-tools-version: 6.0
import PackageDescription

// The MPI transport: an optional package of its own, so that the root package builds and
// tests on machines without MPI. Needs Open MPI's development files (Debian: libopenmpi-dev),
// found through pkg-config `ompi-c`.
let package = Package(
    name: "swift-multiprocessing-mpi",
    products: [
        .library(name: "MultiprocessingMPI", targets: ["MultiprocessingMPI"])
    ],
    dependencies: [
        .package(name: "swift-multiprocessing", path: ".."),
        // The root's own swift-log (same version range): the ranks' worker logs reach rank 0's
        // logging system.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // mpi.h, and static inline functions for the macros Swift cannot import
        // (MPI_COMM_WORLD, MPI_BYTE, MPI_ANY_SOURCE...).
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        // The constructor that catches a rank above 0 before `main`. No MPI in it: it reads
        // the environment and calls the Swift entry.
        .target(name: "CMPIBootstrap"),
        .target(
            name: "MultiprocessingMPI",
            dependencies: [
                "CMPI",
                "CMPIBootstrap",
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The tour's example: the seed's Pool example on 4 ranks.
        .executableTarget(
            name: "pool-on-ranks",
            dependencies: [
                "MultiprocessingMPI",
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
            ],
            path: "Examples/pool-on-ranks"
        ),
        // The MPI pool's benchmarks (MPI/Benchmarks/compare.py runs them beside mpi4py.futures).
        .executableTarget(
            name: "mpi-benchmarks",
            dependencies: [
                "MultiprocessingMPI",
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
            ],
            path: "Benchmarks/Swift"
        ),
        .testTarget(
            name: "MultiprocessingMPITests",
            dependencies: [
                "MultiprocessingMPI",
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
