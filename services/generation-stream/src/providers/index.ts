export { BuiltinModel, type BuiltinModelOptions } from "./builtin.js";
export { OpenAIProvider, type OpenAIProviderOptions } from "./openai.js";
export * from "./types.js";
