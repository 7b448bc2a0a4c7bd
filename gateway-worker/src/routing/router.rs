//! The routing plan for a job.
//!
//! A model's deployments are ordered by weighted random sampling without replacement
//! (Efraimidis-Spirakis), so the first choice follows the weights exactly (an 80/20 split
//! is 80/20) and the rest of the order is where the job goes if the first choice fails.
//! Fallback models follow, each in its own weighted order. The plan is computed once per
//! job; cooldowns are checked when an attempt is about to be made, not here, because
//! they change while the job runs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use llmq_schemas::{AttemptRoute, LimitSpec, ModelName};
use rand::RngExt;
use tokio::sync::Semaphore;

use crate::config::{
    Config, InvalidToolArguments, ModelConfig, ProviderConfig, ProviderKind, Timeouts,
};
use crate::keys::ProviderKey;
use crate::providers::{Adapter, AdapterConfigError, build_adapter, http_client};

/// A configured provider: its adapter, HTTP client and concurrency limit.
pub struct ProviderHandle {
    pub name: String,
    pub kind: ProviderKind,
    pub adapter: Box<dyn Adapter>,
    pub client: reqwest::Client,
    /// Bounds this worker's in-flight requests to the provider.
    pub permits: Arc<Semaphore>,
    pub max_concurrency: usize,
    pub timeouts: Timeouts,
    /// The key now: an attempt takes it once, at its start; replaced when its
    /// `api_key_file` changes (`crate::keys`).
    pub key: ProviderKey,
    /// The provider account's fleet-wide limits.
    pub limits: LimitSpec,
}

impl fmt::Debug for ProviderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderHandle")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Deployment {
    /// Index into the router's deployment list; the cooldown key.
    pub index: usize,
    pub provider: Arc<ProviderHandle>,
    pub upstream_model: String,
    pub weight: u32,
    /// The deployment's fleet-wide limits.
    pub limits: LimitSpec,
}

impl Deployment {
    /// `provider/upstream_model`, for logs and price lookups.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider.name, self.upstream_model)
    }
}

#[derive(Debug)]
pub struct ModelRoute {
    pub name: ModelName,
    pub deployments: Vec<Arc<Deployment>>,
    pub fallbacks: Vec<String>,
    pub context_window_fallbacks: Vec<String>,
    pub content_policy_fallbacks: Vec<String>,
    pub default_max_tokens: Option<u32>,
    pub invalid_tool_arguments: InvalidToolArguments,
}

impl ModelRoute {
    /// Providers this model can use, without duplicates.
    pub fn providers(&self) -> Vec<Arc<ProviderHandle>> {
        let mut providers: Vec<Arc<ProviderHandle>> = Vec::new();
        for deployment in &self.deployments {
            if !providers
                .iter()
                .any(|p| Arc::ptr_eq(p, &deployment.provider))
            {
                providers.push(deployment.provider.clone());
            }
        }
        providers
    }
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: Arc<ModelRoute>,
    pub deployment: Arc<Deployment>,
    pub route: AttemptRoute,
}

#[derive(Debug)]
pub struct Router {
    models: BTreeMap<String, Arc<ModelRoute>>,
    providers: BTreeMap<String, Arc<ProviderHandle>>,
    deployment_count: usize,
}

/// Why the routes could not be built from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Adapter(#[from] AdapterConfigError),
    #[error("providers.{provider}: cannot build HTTP client: {source}")]
    HttpClient {
        provider: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("models.{model}: {source}")]
    ModelName {
        model: String,
        #[source]
        source: llmq_schemas::SubjectError,
    },
    #[error("models.{model}.deployments[{index}].provider: unknown provider {provider:?}")]
    UnknownProvider {
        model: String,
        index: usize,
        provider: String,
    },
}

impl Router {
    pub fn build(config: &Config) -> Result<Router, RouteError> {
        Router::build_reusing(config, |_, _| None)
    }

    /// The routes of `config` after a reload from `previous` (built from
    /// `previous_config`): a provider whose settings did not change keeps its handle (its
    /// request slots, HTTP connections and key watch), with the key the new load read; a
    /// changed one gets a new handle, which new calls use while calls in flight finish on
    /// the old one.
    pub fn rebuild(
        config: &Config,
        previous: &Router,
        previous_config: &Config,
    ) -> Result<Router, RouteError> {
        Router::build_reusing(config, |name, provider| {
            let old = previous_config.providers.get(name)?;
            let same = ProviderConfig {
                api_key: None,
                ..old.clone()
            } == ProviderConfig {
                api_key: None,
                ..provider.clone()
            };
            let handle = previous.provider(name).filter(|_| same)?;
            if let Some(key) = &provider.api_key {
                handle.key.replace(key.clone());
            }
            Some(Arc::clone(handle))
        })
    }

    fn build_reusing(
        config: &Config,
        reuse: impl Fn(&str, &ProviderConfig) -> Option<Arc<ProviderHandle>>,
    ) -> Result<Router, RouteError> {
        let providers = config
            .providers
            .iter()
            .map(|(name, provider)| {
                let handle = match reuse(name, provider) {
                    Some(handle) => handle,
                    None => Arc::new(provider_handle(name, provider)?),
                };
                Ok((name.clone(), handle))
            })
            .collect::<Result<BTreeMap<_, _>, RouteError>>()?;
        let mut models = BTreeMap::new();
        let mut next_index = 0;
        for (name, model) in &config.models {
            let route = model_route(name, model, &providers, &mut next_index)?;
            models.insert(name.clone(), Arc::new(route));
        }
        Ok(Router {
            models,
            providers,
            deployment_count: next_index,
        })
    }

    pub fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<ModelRoute>> {
        self.models.values()
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<ProviderHandle>> {
        self.providers.values()
    }

    /// The provider named `name` in `[providers]`.
    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderHandle>> {
        self.providers.get(name)
    }

    /// Old index -> new index of every deployment of `previous` that these routes still
    /// have: the same model, upstream model and provider handle (a provider whose
    /// settings changed is a new one). A reload carries their cooldowns over.
    pub fn carried_deployments(&self, previous: &Router) -> BTreeMap<usize, usize> {
        let mut carried = BTreeMap::new();
        for (name, model) in &self.models {
            let Some(old) = previous.models.get(name) else {
                continue;
            };
            for new in &model.deployments {
                let same = old.deployments.iter().find(|d| {
                    d.upstream_model == new.upstream_model
                        && Arc::ptr_eq(&d.provider, &new.provider)
                });
                if let Some(same) = same {
                    carried.insert(same.index, new.index);
                }
            }
        }
        carried
    }

    pub fn deployment_count(&self) -> usize {
        self.deployment_count
    }

    /// The model's deployments in weighted random order (primary first, then deployment
    /// fallbacks), then its `fallbacks` models' deployments.
    pub fn plan(&self, model: &Arc<ModelRoute>, rng: &mut impl RngExt) -> Vec<Candidate> {
        let mut plan = Vec::new();
        for (i, deployment) in weighted_order(&model.deployments, rng)
            .into_iter()
            .enumerate()
        {
            plan.push(Candidate {
                model: Arc::clone(model),
                deployment,
                route: if i == 0 {
                    AttemptRoute::Primary
                } else {
                    AttemptRoute::DeploymentFallback
                },
            });
        }
        plan.extend(self.plan_for(&model.fallbacks, AttemptRoute::ModelFallback, rng));
        plan
    }

    /// The deployments of `models`, each model's in weighted order, all marked `route`.
    pub fn plan_for(
        &self,
        models: &[String],
        route: AttemptRoute,
        rng: &mut impl RngExt,
    ) -> Vec<Candidate> {
        let mut plan = Vec::new();
        for name in models {
            let Some(model) = self.models.get(name) else {
                continue;
            };
            for deployment in weighted_order(&model.deployments, rng) {
                plan.push(Candidate {
                    model: Arc::clone(model),
                    deployment,
                    route,
                });
            }
        }
        plan
    }
}

/// Weighted sampling without replacement: sort by `u^(1/w)` descending. Weight-0
/// deployments come last, in config order (standbys).
fn weighted_order(deployments: &[Arc<Deployment>], rng: &mut impl RngExt) -> Vec<Arc<Deployment>> {
    if deployments.len() == 1 {
        return deployments.to_vec();
    }
    let mut keyed: Vec<(f64, usize, &Arc<Deployment>)> = deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let key = if d.weight == 0 {
                -1.0
            } else {
                let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                u.powf(1.0 / f64::from(d.weight))
            };
            (key, i, d)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, _, d)| Arc::clone(d)).collect()
}

fn provider_handle(name: &str, provider: &ProviderConfig) -> Result<ProviderHandle, RouteError> {
    let adapter = build_adapter(name, provider)?;
    let client = http_client::build_client(provider).map_err(|source| RouteError::HttpClient {
        provider: name.to_owned(),
        source,
    })?;
    Ok(ProviderHandle {
        name: name.to_owned(),
        kind: provider.kind,
        adapter,
        client,
        permits: Arc::new(Semaphore::new(provider.max_concurrency)),
        max_concurrency: provider.max_concurrency,
        timeouts: provider.timeouts.clone(),
        key: ProviderKey::new(provider.api_key.clone()),
        limits: provider.limits,
    })
}

/// A model's route; its deployments are numbered from `next_index` (the cooldown keys).
fn model_route(
    name: &str,
    model: &ModelConfig,
    providers: &BTreeMap<String, Arc<ProviderHandle>>,
    next_index: &mut usize,
) -> Result<ModelRoute, RouteError> {
    let model_name = ModelName::parse(name).map_err(|source| RouteError::ModelName {
        model: name.to_owned(),
        source,
    })?;
    let mut deployments = Vec::new();
    for (i, deployment) in model.deployments.iter().enumerate() {
        let provider =
            providers
                .get(&deployment.provider)
                .ok_or_else(|| RouteError::UnknownProvider {
                    model: name.to_owned(),
                    index: i,
                    provider: deployment.provider.clone(),
                })?;
        deployments.push(Arc::new(Deployment {
            index: *next_index,
            provider: Arc::clone(provider),
            upstream_model: deployment.model.clone(),
            weight: deployment.weight,
            limits: deployment.limits,
        }));
        *next_index += 1;
    }
    Ok(ModelRoute {
        name: model_name,
        deployments,
        fallbacks: model.fallbacks.clone(),
        context_window_fallbacks: model.context_window_fallbacks.clone(),
        content_policy_fallbacks: model.content_policy_fallbacks.clone(),
        default_max_tokens: model.default_max_tokens,
        invalid_tool_arguments: model.invalid_tool_arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeploymentConfig, ModelConfig};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn config(weights: &[(&str, u32)], fallbacks: Vec<String>) -> Config {
        let toml = r#"
[providers.a]
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
[providers.b]
kind = "openai_compatible"
base_url = "http://127.0.0.1:2/v1"
[models.backup]
deployments = [{ provider = "b", model = "backup-up" }]
[models.main]
deployments = [{ provider = "a", model = "placeholder" }]
"#;
        let mut config = crate::config::load_str(toml, None).unwrap();
        config.models.insert(
            "main".into(),
            ModelConfig {
                deployments: weights
                    .iter()
                    .map(|(model, weight)| DeploymentConfig {
                        provider: if model.starts_with('b') { "b" } else { "a" }.into(),
                        model: (*model).into(),
                        weight: *weight,
                        limits: Default::default(),
                    })
                    .collect(),
                fallbacks,
                context_window_fallbacks: vec![],
                content_policy_fallbacks: vec![],
                default_max_tokens: None,
                invalid_tool_arguments: InvalidToolArguments::default(),
            },
        );
        config
    }

    #[test]
    fn eighty_twenty_split_lands_within_two_percent_over_ten_thousand_jobs() {
        let router = Router::build(&config(&[("a-80", 80), ("b-20", 20)], vec![])).unwrap();
        let model = router.model("main").unwrap().clone();
        let mut rng = StdRng::seed_from_u64(7);
        let mut first_a = 0;
        for _ in 0..10_000 {
            let plan = router.plan(&model, &mut rng);
            assert_eq!(plan.len(), 2);
            assert_eq!(plan[0].route, AttemptRoute::Primary);
            assert_eq!(plan[1].route, AttemptRoute::DeploymentFallback);
            assert_ne!(plan[0].deployment.index, plan[1].deployment.index);
            if plan[0].deployment.upstream_model == "a-80" {
                first_a += 1;
            }
        }
        let share = f64::from(first_a) / 10_000.0;
        assert!((share - 0.8).abs() < 0.02, "share {share}");
    }

    #[test]
    fn a_rebuild_keeps_unchanged_providers_and_maps_the_deployments_it_keeps() {
        let old_config = config(&[("a-1", 1), ("b-1", 1)], vec![]);
        let old = Router::build(&old_config).unwrap();
        let mut new_config = config(&[("a-1", 3), ("b-1", 1), ("a-2", 1)], vec![]);
        new_config.providers.get_mut("b").unwrap().max_concurrency = 3;
        new_config.providers.get_mut("a").unwrap().api_key =
            Some(crate::config::ApiKey::new("rotated"));
        let new = Router::rebuild(&new_config, &old, &old_config).unwrap();

        let (old_a, new_a) = (old.provider("a").unwrap(), new.provider("a").unwrap());
        assert!(
            Arc::ptr_eq(old_a, new_a),
            "unchanged settings: the same handle"
        );
        assert_eq!(new_a.key.current().unwrap().expose(), "rotated");
        let new_b = new.provider("b").unwrap();
        assert!(!Arc::ptr_eq(old.provider("b").unwrap(), new_b));
        assert_eq!(new_b.permits.available_permits(), 3);

        let index = |router: &Router, upstream: &str| {
            let main = router.model("main").unwrap();
            let found = main
                .deployments
                .iter()
                .find(|d| d.upstream_model == upstream);
            found.unwrap().index
        };
        let carried = new.carried_deployments(&old);
        assert_eq!(carried.get(&index(&old, "a-1")), Some(&index(&new, "a-1")));
        assert_eq!(
            carried.get(&index(&old, "b-1")),
            None,
            "its provider changed"
        );
        assert_eq!(
            carried.len(),
            1,
            "backup's deployment is on b too: {carried:?}"
        );
    }

    #[test]
    fn fallback_models_follow_and_standbys_come_last() {
        let router = Router::build(&config(
            &[("a-standby", 0), ("a-main", 1)],
            vec!["backup".into()],
        ))
        .unwrap();
        let model = router.model("main").unwrap().clone();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let plan = router.plan(&model, &mut rng);
            let order: Vec<(&str, AttemptRoute)> = plan
                .iter()
                .map(|c| (c.deployment.upstream_model.as_str(), c.route))
                .collect();
            assert_eq!(
                order,
                vec![
                    ("a-main", AttemptRoute::Primary),
                    ("a-standby", AttemptRoute::DeploymentFallback),
                    ("backup-up", AttemptRoute::ModelFallback),
                ]
            );
        }
        assert_eq!(model.providers().len(), 1);
    }
}
