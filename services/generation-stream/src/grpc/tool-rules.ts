// The shape of tool use in a StartGeneration request: the functions the model
// may call (tools), which one it must (tool_choice), and the tool calls and
// results carried back in the conversation (messages[i].tool_calls,
// messages[i].tool_call_id). Checked at the edge, so a request the provider
// would refuse (or one naming a call that never happened) is INVALID_ARGUMENT
// by proto field path before anything is stored.
import { type Rule, rule, type Violations } from "@spool/kit";
import {
  type Message,
  type StartGenerationRequest,
  type ToolCallRequested,
  type ToolChoice,
  ToolChoiceMode,
  type ToolDefinition,
} from "@spool/proto/spool/generation/v1/generation.js";

/** Server settings bounding tool definitions (SPOOL_MAX_TOOLS, _TOOL_SCHEMA_CHARS, _TOOL_DESCRIPTION_CHARS). */
export interface ToolLimits {
  maxTools: number;
  maxToolSchemaChars: number;
  maxToolDescriptionChars: number;
}

/** OpenAI's function-name pattern, which compatible servers share. */
export const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const TOOL_NAME_FORMAT = "1-64 of letters, digits, '_', '-'";
/** Call ids are the provider's ("call_…", "toolu_…"): a conservative alphabet, never a path or subject. */
export const CALL_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const CALL_ID_FORMAT = "1-128 of letters, digits, '_', '-', '.', ':'";

function schemaProblem(json: string, max: number): string | undefined {
  if (json === "") return undefined; // no arguments
  if (json.length > max) return `at most ${max} characters`;
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return "must be JSON (a JSON Schema object)";
  }
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? undefined
    : "must be a JSON object (a JSON Schema)";
}

/** StartGenerationRequest.tools. */
export function toolsRule(l: ToolLimits): Rule<ToolDefinition[]> {
  const definition = rule.fields<ToolDefinition>({
    name: rule.matches(TOOL_NAME, TOOL_NAME_FORMAT),
    description: rule.check((d) =>
      d.length > l.maxToolDescriptionChars ? `at most ${l.maxToolDescriptionChars} characters` : undefined,
    ),
    parametersJson: rule.check((json) => schemaProblem(json, l.maxToolSchemaChars)),
  });
  return (tools, field, v) => {
    if (tools.length > l.maxTools) v.check(field, `at most ${l.maxTools} tools`);
    rule.each(definition)(tools, field, v);
    const seen = new Set<string>();
    tools.forEach((t, i) => {
      if (seen.has(t.name)) v.check(`${field}[${i}].name`, "duplicate tool name");
      seen.add(t.name);
    });
  };
}

/** StartGenerationRequest.tool_choice, against the request's tools. */
export function toolChoiceRule(choice: ToolChoice | undefined, tools: ToolDefinition[], v: Violations): void {
  if (choice === undefined) return;
  const mode = choice.mode;
  if (!Object.values(ToolChoiceMode).includes(mode) || mode === ToolChoiceMode.UNRECOGNIZED) {
    v.check("tool_choice.mode", "unknown mode");
    return;
  }
  if (mode !== ToolChoiceMode.TOOL_CHOICE_MODE_UNSPECIFIED && tools.length === 0)
    v.check("tool_choice", "needs tools");
  if (mode === ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION) {
    if (!tools.some((t) => t.name === choice.functionName))
      v.check("tool_choice.function_name", "must name one of the request's tools");
  } else if (choice.functionName !== "") {
    v.check("tool_choice.function_name", "only with TOOL_CHOICE_MODE_FUNCTION");
  }
}

/** Message.tool_calls (each a call the model made in that assistant turn). */
export function toolCallsRule(l: ToolLimits): Rule<ToolCallRequested[]> {
  const call = rule.fields<ToolCallRequested>({
    callId: rule.matches(CALL_ID, CALL_ID_FORMAT),
    toolName: rule.matches(TOOL_NAME, TOOL_NAME_FORMAT),
  });
  return (calls, field, v) => {
    if (calls.length > l.maxTools) v.check(field, `at most ${l.maxTools} tool calls`);
    rule.each(call)(calls, field, v);
  };
}

/**
 * Across one message: tool calls only on an assistant message, a
 * tool_call_id on (and only on) a tool message.
 */
export const messageToolRule: Rule<Message> = (m, field, v) => {
  if (m.toolCalls.length > 0 && m.role !== "assistant")
    v.check(`${field}.tool_calls`, "only an assistant message carries tool calls");
  const id = m.toolCallId ?? "";
  if (m.role === "tool") {
    if (id === "") v.check(`${field}.tool_call_id`, "required on a tool message");
    else if (!CALL_ID.test(id)) v.check(`${field}.tool_call_id`, CALL_ID_FORMAT);
  } else if (id !== "") v.check(`${field}.tool_call_id`, "only on a tool message");
};

/**
 * Across the conversation: each tool message answers a call of an earlier
 * assistant message of the request, and call ids are unique.
 */
export const conversationToolRule: Rule<Message[]> = (list, field, v) => {
  const calls = new Set<string>();
  list.forEach((m, i) => {
    m.toolCalls.forEach((c, j) => {
      if (calls.has(c.callId)) v.check(`${field}[${i}].tool_calls[${j}].call_id`, "duplicate call id");
      calls.add(c.callId);
    });
    const id = m.toolCallId ?? "";
    if (m.role === "tool" && id !== "" && !calls.has(id))
      v.check(`${field}[${i}].tool_call_id`, "answers no tool call of an earlier assistant message");
  });
};

/** The whole request: tool_choice against tools. */
export const requestToolRule: Rule<StartGenerationRequest> = (req, _field, v) =>
  toolChoiceRule(req.toolChoice, req.tools, v);
