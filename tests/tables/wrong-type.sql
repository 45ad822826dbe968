CREATE TABLE user_logins (user_id varchar(128), app_version uuid, create_date date);
