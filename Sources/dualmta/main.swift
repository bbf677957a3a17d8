print("dualmta")
