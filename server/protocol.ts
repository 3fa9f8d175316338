/**
 * OpenAI protocol types in one module: the request bodies sift accepts and the responses, stream chunks and
 * errors it sends, shaped as openai-node's types (snake_case on the wire). sift's own knob, `attention`, rides
 * along as an extra body field (as vLLM's extra_body) and is reported back in `usage.attention`.
 */

/** sift's per-request attention choice (extra body field). */
export interface AttentionParams {
  /** "dense" attends to every KV token; "sparse" uses page selection and streaming heads. */
  mode: 'dense' | 'sparse';
  /** KV tokens a sparse decode step may attend to (retrieval heads), in [1, 2^24]; null = the server's default. */
  token_budget?: number | null;
}

/** Fields shared by both generation endpoints. */
export interface CommonParams {
  /** Must equal the served model's name (GET /v1/models), else 404 model_not_found. */
  model: string;
  /**
   * Most tokens to generate; prompt + max_tokens over the context limit is 400 context_length_exceeded. Default:
   * the rest of the context for chat, 16 for completions (OpenAI's defaults).
   */
  max_tokens?: number | null;
  /** 0 = greedy; in [0, 2]. Default 1. */
  temperature?: number | null;
  /** Nucleus sampling mass in (0, 1]. Default 1. */
  top_p?: number | null;
  /** Keep only the k most likely tokens; 0 or -1 = off (vLLM's extension). */
  top_k?: number | null;
  /** Seed of the sampler; same seed, same tokens. With n > 1, choice i uses seed + i. */
  seed?: number | null;
  /** Up to 4 strings; generation stops before the first one appears in the text (not included). */
  stop?: string | string[] | null;
  /** Completions per prompt (independent requests). Default 1. */
  n?: number | null;
  /** In [-2, 2]: penalize tokens that already appeared (once / per occurrence). */
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  /** Stream chunks as server-sent events. */
  stream?: boolean | null;
  stream_options?: {
    /** Send a final chunk with `usage` and empty `choices`. */ include_usage?: boolean | null;
  } | null;
  /** End-user id; logged, not used. */
  user?: string | null;
  /** sift: attention mode and token budget for this request; null = the server's defaults. */
  attention?: AttentionParams | null;
  /** Token id (as a string key) -> bias in [-100, 100] added to its logit; -100 bans, +100 all but forces. */
  logit_bias?: Record<string, number> | null;
  /** Drop tokens less likely than min_p times the most likely one, in [0, 1] (vLLM / llama.cpp). */
  min_p?: number | null;
  /** > 1 makes tokens of the prompt and output so far less likely (HF / vLLM), in (0, 10]. */
  repetition_penalty?: number | null;
  /** Constrain the output: any JSON object, or JSON that a schema accepts (always parses and validates). */
  response_format?: ResponseFormat | null;
}

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | {
      type: 'json_schema';
      json_schema: { name: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null };
    };

/** A function the model may call (OpenAI `tools[i]`). */
export interface ToolParam {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

/** A tool call of an assistant message: `arguments` is a JSON text. */
export interface ToolCall {
  /** "call_" + 24 characters. */
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ChatMessageParam {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content: string | Array<{ type: 'text'; text: string }> | null;
  name?: string;
  /** tool messages: the call they answer. */
  tool_call_id?: string;
  /** assistant messages: the calls they made. */
  tool_calls?: ToolCall[] | null;
}

export interface ChatCompletionRequest extends CommonParams {
  messages: ChatMessageParam[];
  /** OpenAI's newer name for max_tokens (takes precedence). */
  max_completion_tokens?: number | null;
  /** Return the sampled tokens' log probabilities. */
  logprobs?: boolean | null;
  /** With logprobs: this many most likely alternatives per position (0..20). */
  top_logprobs?: number | null;
  /** Functions the model may call; they reach the chat template as `tools`. */
  tools?: ToolParam[] | null;
  /** none / auto (default with tools) / required / one named function; required and named are constrained. */
  tool_choice?: ToolChoice | null;
  /** With tool_choice required: allow more than one call (default true). */
  parallel_tool_calls?: boolean | null;
}

export interface CompletionRequest extends CommonParams {
  /** Text, a list of texts, token ids, or a list of token-id lists. */
  prompt: string | string[] | number[] | number[][];
  /** Return logprobs of the sampled token and this many alternatives (0..20). */
  logprobs?: number | null;
}

/**
 * Why a choice ended: OpenAI's "stop" (a stop id or stop string), "length" (max_tokens, or the context, reached:
 * only the request's own limit) and "tool_calls" (the model called tools), plus sift's "timeout" (the server's
 * request timeout ended it; the text is what was generated until then) and vLLM's "abort" (the engine request was
 * cancelled; not normally sent, since that happens when the client has gone). A request the server cuts for any
 * other reason (shutdown, a failed step, a device fault) is answered with an error, never a finish reason.
 */
export type FinishReasonWire = 'stop' | 'length' | 'tool_calls' | 'timeout' | 'abort';

export interface AttentionUsageWire {
  /**
   * Decode attention as it ran: "sparse" when some decode step read fewer KV tokens than its context (page selection
   * or streaming heads), "dense" when every head read every token (also when sparse was asked for and the context
   * fit the token budget).
   */
  mode: 'dense' | 'sparse';
  /** The mode the request asked for (its `attention.mode`, else the server's default). */
  requested_mode: 'dense' | 'sparse';
  /** Mean KV tokens read per decode step and (layer, KV head), streaming heads included, as the kernels read them. */
  mean_tokens_attended: number;
  /** Mean context of the decode steps: what dense attention reads. */
  mean_context_tokens: number;
  /** Share of the causal key blocks block-sparse prefill skipped; null when prefill was dense. */
  prefill_key_blocks_skipped_share: number | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { /** Prompt tokens served from the prefix cache. */ cached_tokens: number };
  /** sift: how attention ran (over all the request's choices, decode figures weighted by decode steps). */
  attention: AttentionUsageWire;
}

/** One alternative in chat logprobs. */
export interface ChatTopLogprob {
  token: string;
  logprob: number;
  /** UTF-8 bytes of `token`. */
  bytes: number[] | null;
}

export interface ChatTokenLogprob extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

export interface ChatLogprobs {
  content: ChatTokenLogprob[] | null;
}

/** Completions logprobs (the legacy shape). */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>> | null;
  text_offset: number[];
}

export interface ChatCompletion {
  /** "chatcmpl-..." */
  id: string;
  object: 'chat.completion';
  /** Unix seconds. */
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: 'assistant'; content: string | null; tool_calls?: ToolCall[] };
    logprobs: ChatLogprobs | null;
    finish_reason: FinishReasonWire;
  }>;
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: {
      role?: 'assistant';
      content?: string;
      tool_calls?: Array<{
        index: number;
        id?: string;
        type?: 'function';
        function: { name?: string; arguments: string };
      }>;
    };
    logprobs: ChatLogprobs | null;
    finish_reason: FinishReasonWire | null;
  }>;
  /** Present (null) on every chunk when include_usage is set; the last chunk carries the numbers. */
  usage?: Usage | null;
}

export interface Completion {
  /** "cmpl-..." */
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    text: string;
    logprobs: CompletionLogprobs | null;
    finish_reason: FinishReasonWire;
  }>;
  usage: Usage;
}

/** Streamed completions reuse the `text_completion` object with partial text. */
export interface CompletionChunk {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    text: string;
    logprobs: CompletionLogprobs | null;
    finish_reason: FinishReasonWire | null;
  }>;
  usage?: Usage | null;
}

export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: 'sift';
  /** Context limit in tokens (vLLM's field). */
  max_model_len: number;
  /** sift: how the model is served (the attention settings, the adapter), once loaded; load tests record it. */
  sift?: ServerSettings;
}

/** How sift serves its model: what a benchmark report needs to say what ran. */
export interface ServerSettings {
  /** The WebGPU adapter, as Dawn lists it. */
  adapter: string;
  attention: {
    /** Default decode attention of retrieval heads (a request may choose its own). */
    mode: 'dense' | 'sparse';
    token_budget: number;
    page_size: number;
    prefill_mode: 'dense' | 'block-sparse';
    /** Share of (layer, KV head) pairs that are streaming heads (0 without a head pattern). */
    streaming_head_share: number;
    /** Streaming heads' sink and local window (tokens); meaningful when streaming_head_share > 0. */
    sink: number;
    local: number;
  };
  /** Whether the prefix cache is on (off with streaming heads). */
  prefix_cache: boolean;
}

export interface ModelList {
  object: 'list';
  data: ModelCard[];
}

/** Every error body: `{"error": {...}}`. */
export interface ErrorBody {
  error: {
    message: string;
    /** invalid_request_error, rate_limit_error, server_error. */
    type: string;
    /** The request field at fault, e.g. "temperature" or "messages[0].role". */
    param: string | null;
    /** Stable lowercase code, e.g. "context_length_exceeded", "model_not_found". */
    code: string | null;
  };
}
