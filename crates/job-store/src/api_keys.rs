//! Client API keys, stored as sha256 hex only: the key itself is never kept.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::entities::api_key;
use crate::{Store, StoreResult, new_id, now, sha256_hex};

fn key_hash(key: &str) -> String {
    sha256_hex(&[key.as_bytes()])
}

impl Store {
    /// Adds (or replaces) the key of client `name`.
    pub async fn add_api_key(&self, name: &str, key: &str) -> StoreResult<()> {
        let _gate = self.write_gate().await;
        let row = api_key::ActiveModel {
            id: Set(new_id()),
            name: Set(name.to_owned()),
            key_hash: Set(key_hash(key)),
            created_at: Set(now()),
        };
        api_key::Entity::insert(row)
            .on_conflict(
                OnConflict::column(api_key::Column::Name)
                    .update_columns([api_key::Column::KeyHash, api_key::Column::CreatedAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// The client name of a key, if the key is known.
    pub async fn verify_api_key(&self, key: &str) -> StoreResult<Option<String>> {
        let row = api_key::Entity::find().filter(api_key::Column::KeyHash.eq(key_hash(key))).one(&self.db).await?;
        Ok(row.map(|r| r.name))
    }

    /// Removes the key of client `name`; `false` if there was none.
    pub async fn remove_api_key(&self, name: &str) -> StoreResult<bool> {
        let _gate = self.write_gate().await;
        let res = api_key::Entity::delete_many().filter(api_key::Column::Name.eq(name)).exec(&self.db).await?;
        Ok(res.rows_affected > 0)
    }
}
