// swift-tools-version: 6.2
//
// CowMem: copy-on-write memory regions for Linux.
//
// The C engine (CCowMem) is the same code the Makefile builds into libcowmem; the
// Swift overlay (CowMem) wraps it and owns the thread that serves page faults.

import PackageDescription

let package = Package(
    name: "CowMem",
    products: [
        .library(name: "CowMem", targets: ["CowMem"]),
        .executable(name: "cowmem-demo", targets: ["cowmem-demo"]),
        .executable(name: "cowmem-snapshots", targets: ["cowmem-snapshots"]),
        .executable(name: "cowmem-image-undo", targets: ["cowmem-image-undo"]),
        .executable(name: "cowmem-swift-bench", targets: ["cowmem-swift-bench"]),
    ],
    dependencies: [
        // Only for `Errno`, the ecosystem's errno type; a small package that builds in seconds.
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Only for `swift package generate-documentation` (`make docs`); nothing links it.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "CCowMem",
            path: "Sources/CCowMem",
            publicHeadersPath: "include",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("pthread")]
        ),
        .target(
            name: "CowMem",
            dependencies: [
                "CCowMem",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Sources/CowMem",
            swiftSettings: [
                // For `@_lifetime` on the span properties (`CowBuffer.span`, `Region.span(of:)`).
                // Swift 6.2 and 6.3 offer lifetime annotations only as this experimental
                // feature; packages that use those properties need no setting of their own.
                // Drop it when lifetime dependencies become part of the language.
                .enableExperimentalFeature("Lifetimes"),
                // For `import Builtin` in CowBuffer.swift: the subscript's uniqueness check is
                // `Builtin.beginCOWMutation`, as `Array`'s is, so that the optimizer can take
                // it out of a loop of writes. Packages that use CowMem need no setting.
                .enableExperimentalFeature("BuiltinModule"),
            ]
        ),
        .executableTarget(
            name: "cowmem-demo",
            dependencies: ["CowMem"],
            path: "Sources/cowmem-demo"
        ),
        .executableTarget(
            name: "cowmem-snapshots",
            dependencies: ["CowMem"],
            path: "Examples/swift"
        ),
        .executableTarget(
            name: "cowmem-image-undo",
            dependencies: ["CowMem"],
            path: "Examples/swift-image-undo"
        ),
        .executableTarget(
            name: "cowmem-swift-bench",
            dependencies: ["CowMem"],
            path: "Benchmarks/swift"
        ),
        .testTarget(
            name: "CowMemTests",
            dependencies: ["CowMem"],
            path: "Tests/CowMemTests"
        ),
    ]
)
