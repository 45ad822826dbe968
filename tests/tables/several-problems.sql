CREATE TABLE "Contacts" ("Contact Phone Number" varchar(8), loaded time, file integer, region text NOT NULL);
