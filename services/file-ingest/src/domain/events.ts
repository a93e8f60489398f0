// The FILES stream and its events: the stream's definition is the kit's
// (FilesStreams: other services read it); this service owns and creates it.
import { type EventOf, FileEvents, FilesStreams } from "@spool/kit";

export { FileEvents, FilesStreams };
export const Subjects = FilesStreams.FILES.subjects;
export const FILES_STREAM = FilesStreams.FILES.definition();
export type FileEvent = EventOf<typeof FileEvents>;
export const { FileRecorded, FileScanned, FileDeleted } = FileEvents.types;
