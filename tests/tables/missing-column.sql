CREATE TABLE user_logins (user_id varchar(128), create_date date);
