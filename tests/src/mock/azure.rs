//! Azure OpenAI (`POST /openai/deployments/{deployment}/chat/completions?api-version=...`).
//!
//! OpenAI's shapes with Azure's differences, which are the ones adapters get wrong: the key
//! travels in `api-key`, the deployment id in the path is the model, a missing
//! `api-version` is a bare `404 Resource not found`, Azure-generated errors use
//! `{"error":{"code","message"}}` (string codes, no `type`), every response carries content
//! filter annotations, and a stream opens with a choice-less `prompt_filter_results` chunk
//! whose `id` and `model` are empty.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;

use super::chat::{
    Flavor, MALFORMED, STREAM_ERROR, context_length_error, error_body, invalid_request, parse_body,
    quota_error, render_completion, render_frames,
};
use super::content::fnv1a;
use super::dialect::{Dialect, ErrorCtx, Incoming, Rejection, openai_rate_headers};
use super::faults::{Fault, retry_headers};
use super::options::MockOptions;
use super::quota::QuotaState;
use super::record::WireFormat;
use super::reply::{ChatRequest, Reply};
use super::sse::{Frame, raw};

fn azure_error(status: StatusCode, code: &str, message: &str) -> Rejection {
    Rejection::json(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

fn content_filter_error() -> Rejection {
    // The documented shape (Azure OpenAI content filtering concepts page).
    let body = json!({
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": { "filtered": true, "severity": "high" },
                    "self_harm": { "filtered": false, "severity": "safe" },
                    "sexual": { "filtered": false, "severity": "safe" },
                    "violence": { "filtered": false, "severity": "safe" }
                }
            }
        }
    });
    Rejection::json(StatusCode::BAD_REQUEST, &body)
}

/// Azure OpenAI.
#[derive(Debug)]
pub(crate) struct Azure;

impl Dialect for Azure {
    fn format(&self) -> WireFormat {
        WireFormat::Azure
    }

    fn parse(&self, incoming: &Incoming<'_>) -> Result<ChatRequest, Rejection> {
        if incoming
            .query_param("api-version")
            .is_none_or(str::is_empty)
        {
            return Err(azure_error(
                StatusCode::NOT_FOUND,
                "404",
                "Resource not found",
            ));
        }
        if !incoming
            .key(self.format())
            .is_some_and(|key| incoming.accepts(key))
        {
            return Err(self.error(&Fault::Unauthorized, &incoming.error_ctx()));
        }
        let Some(body) = incoming.body else {
            return Err(invalid_request(
                "We could not parse the JSON body of your request.",
                None,
            ));
        };
        parse_body(body, incoming.path_model)
            .map_err(|(message, param)| invalid_request(&message, param))
    }

    fn error(&self, fault: &Fault, ctx: &ErrorCtx<'_>) -> Rejection {
        match fault {
            Fault::RateLimited(hint) => azure_error(
                StatusCode::TOO_MANY_REQUESTS,
                "429",
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
            )
            .with_headers(retry_headers(hint)),
            Fault::QuotaExhausted => quota_error(),
            Fault::ContextWindowExceeded => context_length_error(ctx),
            Fault::ContentFiltered => content_filter_error(),
            Fault::ServiceUnavailable | Fault::Overloaded => azure_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unable to process your request. Please try again later.",
            ),
            Fault::BadRequest => Rejection::json(
                StatusCode::BAD_REQUEST,
                &error_body(
                    "Invalid 'messages[0]': the mock provider was told to reject this request.",
                    "invalid_request_error",
                    Some("messages"),
                    None,
                ),
            ),
            Fault::Unauthorized => azure_error(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            ),
            Fault::NotFound => azure_error(
                StatusCode::NOT_FOUND,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
            ),
            _ => azure_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Backend returned unexpected response. Please contact Microsoft for help.",
            ),
        }
    }

    fn render(&self, reply: &Reply, _request: &ChatRequest) -> Bytes {
        render_completion(Flavor::Azure, reply)
    }

    fn frames(&self, reply: &Reply, request: &ChatRequest, options: &MockOptions) -> Vec<Frame> {
        render_frames(Flavor::Azure, reply, request, options)
    }

    fn stream_error(&self) -> Bytes {
        raw(STREAM_ERROR)
    }

    fn stream_error_status(&self) -> Fault {
        Fault::ServerError
    }

    fn malformed(&self) -> Bytes {
        raw(MALFORMED)
    }

    /// Azure sends integer seconds under OpenAI's names.
    fn quota_headers(&self, quota: &QuotaState) -> Vec<(&'static str, String)> {
        let secs = quota.resets_in.as_millis().div_ceil(1000);
        vec![
            ("x-ratelimit-limit-requests", quota.limit.to_string()),
            (
                "x-ratelimit-remaining-requests",
                quota.remaining.to_string(),
            ),
            ("x-ratelimit-reset-requests", secs.to_string()),
        ]
    }

    fn headers(&self, request_id: &str, rate_limited: bool) -> Vec<(&'static str, String)> {
        let h = fnv1a(&[request_id.as_bytes()]);
        let apim = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 20) & 0xfff,
            h & 0xffff_ffff_ffff
        );
        let mut headers = vec![
            ("x-request-id", request_id.to_owned()),
            ("apim-request-id", apim),
            ("x-ms-region", "Mock Region".to_owned()),
        ];
        headers.extend(openai_rate_headers(rate_limited));
        headers
    }
}
