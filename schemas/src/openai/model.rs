//! `GET /v1/models` and `GET /v1/models/{id}`: the model object and the list of them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub owned_by: String,
}

impl Model {
    /// A model llmq serves: owned by `llmq`, created at 0 (a logical model has no date).
    pub fn served(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: "model".into(),
            created: 0,
            owned_by: "llmq".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: "list".into(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn models_have_openais_shape() {
        let list = ModelList::new(vec![Model::served("chat")]);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"object": "list", "data": [
                {"id": "chat", "object": "model", "created": 0, "owned_by": "llmq"}]})
        );
    }
}
