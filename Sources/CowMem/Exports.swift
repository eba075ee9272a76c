// The API takes and returns swift-system's types (`FilePath`, `FileDescriptor`, `Errno`), so
// `import CowMem` alone must make them visible: `public import` only allows them in public
// declarations, it does not re-export them. `@_exported` is what swift-nio and other
// packages use for this until Swift has a non-underscored re-export.
@_exported import SystemPackage
