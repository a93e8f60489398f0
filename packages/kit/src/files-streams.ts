// The FILES stream's contract: file-ingest owns and writes it; other services
// (generation-stream) read it into their own projections, so its definition
// lives here rather than in file-ingest.
import { FileDeleted, FileRecorded, FileScanned } from "@spool/proto/spool/files/v1/events.js";
import { defineEvents } from "./event-codec.js";
import { defineStreams, family } from "./streams.js";

export const FilesStreams = defineStreams({
  FILES: {
    filters: ["files.>"],
    subjects: {
      /** One subject per file: recorded, scanned, deleted. */
      file: family("files.file"),
    },
  },
});

/** The public events of a file's subject; file-ingest may add more, readers decode those as unknown. */
export const FileEvents = defineEvents(
  { FileRecorded, FileScanned, FileDeleted },
  { prefix: "spool.files.v1." },
);
