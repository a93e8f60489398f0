import type { GenerationRequested } from "@spool/proto/spool/generation/v1/events.js";
import { ToolChoiceMode } from "@spool/proto/spool/generation/v1/generation.js";
import { describe, expect, it } from "vitest";
import { modelRequest } from "./worker.js";

const base: GenerationRequested = {
  generationId: "g1",
  orgId: "o1",
  ownerId: "u1",
  clientRequestId: "r1",
  model: "gpt",
  messages: [{ role: "user", content: "hi", toolCalls: [] }],
  parameters: { maxTokens: 10 },
  toolIds: [],
  fileIds: [],
  conversationId: "",
  tools: [],
};
const signal = new AbortController().signal;

describe("a generation's request as the provider sees it", () => {
  it("carries no tools or tool_choice when the request has none", () => {
    const req = modelRequest(base, signal);
    expect(req).not.toHaveProperty("tools");
    expect(req).not.toHaveProperty("toolChoice");
    expect(req.params).toEqual({ maxTokens: 10 });
    expect(req.messages).toEqual([{ role: "user", content: "hi" }]);
  });

  it("maps tools (schema parsed), every tool_choice mode, tool calls and tool results", () => {
    const withTools: GenerationRequested = {
      ...base,
      messages: [
        { role: "user", content: "q", toolCalls: [] },
        { role: "assistant", content: "", toolCalls: [{ callId: "c1", toolName: "f", argumentsJson: "{}" }] },
        { role: "tool", content: "r", toolCallId: "c1", toolCalls: [] },
      ],
      tools: [
        { name: "f", description: "does f", parametersJson: '{"type":"object"}' },
        { name: "g", description: "", parametersJson: "" },
      ],
    };
    const choiceOf = (mode: ToolChoiceMode, functionName = "") =>
      modelRequest({ ...withTools, toolChoice: { mode, functionName } }, signal).toolChoice;
    expect(choiceOf(ToolChoiceMode.TOOL_CHOICE_MODE_UNSPECIFIED)).toBeUndefined();
    expect(choiceOf(ToolChoiceMode.TOOL_CHOICE_MODE_AUTO)).toBe("auto");
    expect(choiceOf(ToolChoiceMode.TOOL_CHOICE_MODE_NONE)).toBe("none");
    expect(choiceOf(ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED)).toBe("required");
    expect(choiceOf(ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, "g")).toEqual({ function: "g" });
    const req = modelRequest(withTools, signal);
    expect(req.tools).toEqual([
      { name: "f", description: "does f", parameters: { type: "object" } },
      { name: "g" },
    ]);
    expect(req.messages).toEqual([
      { role: "user", content: "q" },
      { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "f", argumentsJson: "{}" }] },
      { role: "tool", content: "r", toolCallId: "c1" },
    ]);
  });
});
