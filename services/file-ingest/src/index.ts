// file-ingest: the service's modules are added under src/ (see docs/ARCHITECTURE.md).
export {};
