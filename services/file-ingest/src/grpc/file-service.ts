import { type AsyncService, FailedPreconditionError } from "@spool/kit";
import type { FileServiceService } from "@spool/proto/spool/files/v1/files.js";

type Definition = typeof FileServiceService;

const todo = async (): Promise<never> => {
  throw new FailedPreconditionError("not implemented yet");
};

export function fileService(): AsyncService<Definition> {
  return {
    upload: todo,
    getFile: todo,
    downloadFile: todo,
    listFiles: todo,
    deleteFile: todo,
    importUrl: todo,
    expandArchive: todo,
  };
}
