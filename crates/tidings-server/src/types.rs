//! Resolves event types (built-in and custom) and keeps their compiled schemas.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tidings_core::catalog::{self, DataSchema, EventTypeDef};
use tidings_store::Store;

use crate::cache::Fresh;
use crate::error::ApiResult;

/// How long another node's change to a custom type may take to be seen here.
const CUSTOM_REFRESH: Duration = Duration::from_secs(5);

pub struct ResolvedType {
    pub def: EventTypeDef,
    pub builtin: bool,
    pub schema: Option<DataSchema>,
}

type TypeMap = HashMap<String, Arc<ResolvedType>>;

#[derive(Default)]
pub struct EventTypes {
    builtin: RwLock<HashMap<String, Arc<ResolvedType>>>,
    custom: RwLock<Option<Fresh<TypeMap>>>,
}

fn resolve(def: EventTypeDef, builtin: bool) -> Arc<ResolvedType> {
    // Stored schemas were validated on the way in, so a failure here means none is enforced.
    let schema = def
        .schema
        .as_ref()
        .and_then(|s| DataSchema::compile(s).ok());
    Arc::new(ResolvedType {
        def,
        builtin,
        schema,
    })
}

impl EventTypes {
    fn builtin(&self, name: &str) -> Option<Arc<ResolvedType>> {
        if let Some(found) = self
            .builtin
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Some(found.clone());
        }
        let resolved = resolve(catalog::builtin_type(name)?.clone(), true);
        self.builtin
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), resolved.clone());
        Some(resolved)
    }

    async fn customs(&self, store: &dyn Store) -> ApiResult<TypeMap> {
        if let Some(types) = self
            .custom
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|f| f.get(CUSTOM_REFRESH))
        {
            return Ok(types.clone());
        }
        let types: HashMap<_, _> = store
            .list_custom_event_types()
            .await?
            .into_iter()
            .map(|def| (def.name.clone(), resolve(def, false)))
            .collect();
        *self.custom.write().unwrap_or_else(|p| p.into_inner()) = Some(Fresh::new(types.clone()));
        Ok(types)
    }

    /// Forgets cached custom types after a change made through this node.
    pub fn invalidate(&self) {
        *self.custom.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub async fn get(&self, store: &dyn Store, name: &str) -> ApiResult<Option<Arc<ResolvedType>>> {
        if let Some(found) = self.builtin(name) {
            return Ok(Some(found));
        }
        Ok(self.customs(store).await?.get(name).cloned())
    }

    /// Every type, built-in first in catalog order, then custom ones by name.
    pub async fn all(&self, store: &dyn Store) -> ApiResult<Vec<Arc<ResolvedType>>> {
        let mut all: Vec<_> = catalog::builtin()
            .iter()
            .filter_map(|def| self.builtin(&def.name))
            .collect();
        let mut customs: Vec<_> = self.customs(store).await?.into_values().collect();
        customs.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        all.extend(customs);
        Ok(all)
    }
}
