CREATE TABLE t (user_id varchar(128), batch_id uuid, revision varchar(16), message_id uuid);
